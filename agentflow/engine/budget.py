"""Budgets: a run's live usage, checked before every step and every LLM call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentflow.spec.models import Budget, parse_duration


class BudgetExceededError(Exception):
    """A run hit one of its limits; `limit` is steps, tokens, usd or wall."""

    def __init__(self, limit: str, used: float, allowed: float, *, message: str | None = None) -> None:
        self.limit, self.used, self.allowed = limit, used, allowed
        if message is None:
            unit = {"usd": " USD", "tokens": " tokens", "steps": " steps", "wall": " s"}.get(limit, "")
            message = (
                f"{limit} limit of {allowed:g}{unit} reached (used {used:g}{unit}); "
                f"raise spec.budget.{limit} to allow more"
            )
        super().__init__(f"budget exceeded: {message}")


@dataclass(slots=True)
class Usage:
    steps: int = 0
    tokens: int = 0
    usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"steps": self.steps, "tokens": self.tokens, "usd": self.usd}


def add_usage(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """LangGraph reducer: usage deltas from parallel nodes add up."""
    total = dict(left or {})
    for key, value in (right or {}).items():
        total[key] = total.get(key, 0) + value
    return total


class Meter:
    """The run's usage as it happens (shared by its parallel nodes), against its budget."""

    def __init__(
        self,
        budget: Budget,
        start: dict[str, float] | None = None,
        *,
        guard: Callable[[], None] | None = None,
        on_spend: Callable[[float], None] | None = None,
        limits: dict[str, float] | None = None,
    ) -> None:
        """`limits`: a share of a parent run's budget that caps this run's own (a sub-workflow's)."""
        start = start or {}
        self.budget = _within(budget, limits) if limits else budget
        # Budgets beyond this run (daily, per workflow and global) are checked and fed through these.
        self.guard = guard
        self.on_spend = on_spend
        self.usage = Usage(int(start.get("steps", 0)), int(start.get("tokens", 0)), float(start.get("usd", 0.0)))
        self.wall = parse_duration(budget.wall) if budget.wall is not None else None

    def take_step(self) -> None:
        """Count one node execution, refusing it when the step budget is spent."""
        if self.budget.steps is not None and self.usage.steps >= self.budget.steps:
            raise BudgetExceededError("steps", self.usage.steps, self.budget.steps)
        self.check_spend()
        self.usage.steps += 1

    def check_spend(self) -> None:
        if self.budget.tokens is not None and self.usage.tokens >= self.budget.tokens:
            raise BudgetExceededError("tokens", self.usage.tokens, self.budget.tokens)
        if self.budget.usd is not None and self.usage.usd >= self.budget.usd:
            raise BudgetExceededError("usd", round(self.usage.usd, 6), self.budget.usd)
        if self.guard is not None:
            self.guard()

    def remaining(self) -> dict[str, float]:
        """What is left of each bounded limit (steps, tokens, usd): a sub-workflow's share."""
        left: dict[str, float] = {}
        if self.budget.steps is not None:
            left["steps"] = max(self.budget.steps - self.usage.steps, 0)
        if self.budget.tokens is not None:
            left["tokens"] = max(self.budget.tokens - self.usage.tokens, 0)
        if self.budget.usd is not None:
            left["usd"] = max(self.budget.usd - self.usage.usd, 0.0)
        return left

    def absorb(self, steps: int, tokens: int, usd: float) -> None:
        """Count what a sub-workflow's run used (its money is in the ledger already, under its own run)."""
        self.usage.steps += steps
        self.usage.tokens += tokens
        self.usage.usd += usd

    def spend(self, tokens: int, usd: float) -> None:
        self.usage.tokens += tokens
        self.usage.usd += usd
        if self.on_spend is not None and usd:
            self.on_spend(usd)


def _within(budget: Budget, limits: dict[str, float]) -> Budget:
    """The budget, each limit lowered to the parent's share when that is smaller."""
    lowered: dict[str, float] = {}
    for key in ("steps", "tokens", "usd"):
        if key not in limits:
            continue
        share = int(limits[key]) if key != "usd" else float(limits[key])
        own = getattr(budget, key)
        lowered[key] = share if own is None else min(own, share)
    return budget.model_copy(update=lowered)

"""Budgets: a run's live usage, checked before every step and every LLM call."""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.spec.models import Budget, parse_duration


class BudgetExceededError(Exception):
    """A run hit one of its limits; `limit` is steps, tokens, usd or wall."""

    def __init__(self, limit: str, used: float, allowed: float) -> None:
        self.limit, self.used, self.allowed = limit, used, allowed
        unit = {"usd": " USD", "tokens": " tokens", "steps": " steps", "wall": " s"}[limit]
        super().__init__(
            f"budget exceeded: {limit} limit of {allowed:g}{unit} reached (used {used:g}{unit}); "
            f"raise spec.budget.{limit} to allow more"
        )


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

    def __init__(self, budget: Budget, start: dict[str, float] | None = None) -> None:
        start = start or {}
        self.budget = budget
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

    def spend(self, tokens: int, usd: float) -> None:
        self.usage.tokens += tokens
        self.usage.usd += usd

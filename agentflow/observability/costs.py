"""The cost ledger: spend and tokens by day, model, provider, workflow, node and source; daily budgets.

Every provider call the installation pays for is one row of `llm_calls`, priced
by LiteLLM or by AGENTFLOW_PRICES (local models are tokens at zero cost): a
run's calls written by the store from the engine's `LLMCalled` events (source
"run"), the chat assistant's own calls written through `assistant_hooks`
(source "assistant", with the chat session, without a run), and a run's
analysis by a model (source "analyse", agentflow/analyse.py). Every money and
token figure of the Costs and Overview tabs is read from these rows.

Daily budgets (per workflow: `spec.budget.daily_usd`; global:
AGENTFLOW_DAILY_BUDGET_USD) are circuit breakers: while one is spent, new runs
are refused and running ones stop before their next model call. The
assistant's calls count against the global budget — it caps everything the
installation spends on models — and stop with it: while it is spent the
assistant's model is refused too (slash commands still work). They belong to no
workflow, so no workflow's own budget counts them.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentflow.engine.budget import BudgetExceededError
from agentflow.store.base import GROUPS, AssistantCall, CostRow, LedgerStore

if TYPE_CHECKING:
    from agentflow.llm.client import CallRecord

__all__ = ["GROUPS", "CostRow", "Ledger", "assistant_hooks", "spend", "spent", "start_of_day"]


def start_of_day(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(now if now is not None else time.time())
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def spend(store: LedgerStore, *, by: str = "day", since: float | None = None) -> list[CostRow]:
    """Spend grouped by day, model, provider, workflow or node, most expensive (or latest day) first."""
    if by not in GROUPS:
        raise ValueError(f"cannot group costs by '{by}'; use one of {', '.join(GROUPS)}")
    return store.spend(by=by, since=since or 0.0)


def spent(store: LedgerStore, *, since: float, workflow: str | None = None) -> float:
    return store.spent(since=since, workflow=workflow)


class Ledger:
    """Today's spend, kept current from the store, checked against the daily budgets."""

    def __init__(self, store: LedgerStore, *, global_daily_usd: float | None, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.global_daily_usd = global_daily_usd
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._day = 0.0
        self._read_at = 0.0
        self._total = 0.0
        self._by_workflow: dict[str, float] = {}

    def _current(self) -> None:
        """Re-read today's totals when the day changed or the last read is old (other processes spend too)."""
        now = time.time()
        day = start_of_day(now)
        if day == self._day and now - self._read_at < self.refresh_seconds:
            return
        self._by_workflow = self.store.spent_by_workflow(since=day)
        self._total = sum(self._by_workflow.values())
        self._day, self._read_at = day, now

    def add(self, workflow: str, usd: float) -> None:
        """Count a call at once (the store writes it in its next batch)."""
        with self._lock:
            self._current()
            self._total += usd
            self._by_workflow[workflow] = self._by_workflow.get(workflow, 0.0) + usd

    def today(self, workflow: str | None = None) -> float:
        with self._lock:
            self._current()
            return self._by_workflow.get(workflow, 0.0) if workflow else self._total

    def check_assistant(self) -> None:
        """Raise when the global daily budget is spent: the assistant's calls count against it, and stop with it."""
        with self._lock:
            self._current()
            total = self._total
        if self.global_daily_usd is not None and total >= self.global_daily_usd:
            raise BudgetExceededError(
                "global_daily_usd",
                round(total, 6),
                self.global_daily_usd,
                message=f"the global daily budget of ${self.global_daily_usd:g} is spent (${total:.4f} today, the "
                "assistant's calls included), so the assistant's model is refused until midnight; "
                "raise AGENTFLOW_DAILY_BUDGET_USD to go on",
            )

    def check(self, workflow: str, workflow_daily_usd: float | None) -> None:
        """Raise when the global or the workflow's daily budget is spent."""
        with self._lock:
            self._current()
            total, mine = self._total, self._by_workflow.get(workflow, 0.0)
        if self.global_daily_usd is not None and total >= self.global_daily_usd:
            raise BudgetExceededError(
                "global_daily_usd",
                round(total, 6),
                self.global_daily_usd,
                message=f"the global daily budget of ${self.global_daily_usd:g} is spent (${total:.4f} today); "
                "runs that call models are refused until midnight, or raise AGENTFLOW_DAILY_BUDGET_USD",
            )
        if workflow_daily_usd is not None and mine >= workflow_daily_usd:
            raise BudgetExceededError(
                "daily_usd",
                round(mine, 6),
                workflow_daily_usd,
                message=f"the daily budget of workflow '{workflow}' (${workflow_daily_usd:g}, spec.budget.daily_usd) "
                f"is spent (${mine:.4f} today); its runs are refused until midnight, or raise the budget",
            )

    def status(self, budgets: dict[str, float]) -> list[dict[str, float | str | bool]]:
        """Today's spend against each budget (global first), for dashboards: read from the ledger's rows now."""
        by_workflow = self.store.spent_by_workflow(since=start_of_day())
        rows: list[dict[str, float | str | bool]] = []
        if self.global_daily_usd is not None:
            total = sum(by_workflow.values())
            rows.append(
                {
                    "budget": "global (AGENTFLOW_DAILY_BUDGET_USD)",
                    "limit_usd": self.global_daily_usd,
                    "spent_usd": total,
                    "tripped": total >= self.global_daily_usd,
                }
            )
        for workflow, limit in sorted(budgets.items()):
            used = by_workflow.get(workflow, 0.0)
            rows.append(
                {
                    "budget": f"{workflow} (spec.budget.daily_usd)",
                    "limit_usd": limit,
                    "spent_usd": used,
                    "tripped": used >= limit,
                }
            )
        return rows


def assistant_hooks(
    store: LedgerStore, ledger: Ledger | None, session_id: str, *, source: str = "assistant"
) -> dict[str, Any]:
    """`before_call`/`on_call` for the chat assistant's model calls (a run's: `engine.nodes.base.llm_hooks`):
    the global daily budget checked before each call, and each call written to the ledger as the assistant's
    (or as `source`'s: "analyse" for a run's analysis, agentflow/analyse.py)."""

    def before_call() -> None:
        if ledger is not None:
            ledger.check_assistant()

    def on_call(record: CallRecord) -> None:
        store.record_assistant_call(
            AssistantCall(
                session_id=session_id,
                model=record.model,
                provider=record.provider,
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cost_usd=record.cost_usd,
                latency_ms=record.latency_ms,
                error=record.error,
                at=time.time(),
                source=source,
            )
        )
        if ledger is not None and record.cost_usd:
            ledger.add("", record.cost_usd)  # no workflow: counted where spent_by_workflow counts it

    return {"before_call": before_call, "on_call": on_call}

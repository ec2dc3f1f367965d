"""What the Workflows tab shows of a workflow: the table, a version's heading and address, its grant and
who gave it, its deployment (triggers, last deliveries, history), its runs (each linking to the run) and its
profile, as HTML and Markdown."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pandas as pd
import yaml

from agentflow import versions
from agentflow.cli_triggers import live_triggers, version_label
from agentflow.observability.profile import profile
from agentflow.spec.errors import SpecErrors
from agentflow.store.base import WorkflowVersion
from agentflow.trust.capabilities import Capabilities
from agentflow.web.ui import queries

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.store.base import Deployment
    from agentflow.triggers.deployments import DeployResult

COLUMNS = ["name", "current", "versions", "updated", "grant", "description"]
COLUMN_WIDTHS: list[str | int] = ["120px", "80px", "80px", "170px", "140px", "220px"]
RUN_LIMIT = 20
PROFILE_RUNS = 100
DELIVERY_LIMIT = 10
HISTORY_LIMIT = 10


def address(name: str, version: str | None = None, compare: str | None = None) -> str:
    """The relative URL of a workflow, one of its versions, or a diff between two."""
    query = {"tab": "workflows", "workflow": name, "version": version, "compare": compare}
    return "/?" + urlencode({key: value for key, value in query.items() if value})


def run_address(run_id: str) -> str:
    return "/?" + urlencode({"tab": "runs", "run": run_id})


def link(href: str, text: str, *, css: str = "") -> str:
    classes = f' class="{css}"' if css else ""
    return f'<a href="{escape(href)}"{classes}>{escape(text)}</a>'


def workflows_frame(flow: AgentFlow) -> pd.DataFrame:
    counts = flow.store.version_counts()
    rows = [
        [
            stored.name,
            versions.label(stored),
            counts.get(stored.name, 1),
            queries.when(stored.created_at),
            grant_cell(flow, stored),
            description(stored.source),
        ]
        for stored in flow.store.list_workflows()
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def description(source: str) -> str:
    try:
        data = yaml.safe_load(source)
        return str(data["metadata"].get("description") or "")
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        return ""


def choice(stored: WorkflowVersion, current: WorkflowVersion | None) -> str:
    mark = " (current)" if current is not None and current.version == stored.version else ""
    return f"{versions.label(stored)}{mark} — {queries.when(stored.created_at)}"


def heading(stored: WorkflowVersion, current: WorkflowVersion | None, other: WorkflowVersion | None, count: int) -> str:
    name, label = stored.name, versions.label(stored)
    state = "current" if current is not None and current.version == stored.version else "not current"
    lines = [
        f"<h3>{escape(name)} {escape(label)} <small>({state}; {count} version{'s' if count != 1 else ''})</small></h3>",
        f"<p>id <code>{escape(stored.version)}</code> · saved {escape(queries.when(stored.created_at))}"
        + (f" from <code>{escape(stored.path)}</code>" if stored.path else "")
        + " · "
        + link(address(name, label, versions.label(other) if other else None), "link to this view", css="permalink")
        + "</p>",
    ]
    if other is not None:
        lines.append(f"<p>Changes from <b>{escape(versions.label(other))}</b> to <b>{escape(label)}</b> below.</p>")
    return "\n".join(lines)


def grant_cell(flow: AgentFlow, stored: WorkflowVersion) -> str:
    try:
        review = flow.review(stored)
    except Exception:  # an old version that no longer compiles: say so rather than fail the table
        return "cannot be checked"
    return f"needs review: {review.missing.describe()}" if review.needs_review else "granted"


def grant_text(flow: AgentFlow, stored: WorkflowVersion, by_hash: dict[str, WorkflowVersion]) -> str:
    """What a version may use, what of it waits for a person, and who granted the workflow what, when."""
    try:
        review = flow.review(stored)
    except SpecErrors as exc:
        return f"**Cannot be checked:** this version no longer validates here ({exc.errors[0].message})."
    name, label = stored.name, versions.label(stored)
    state = (
        f"⚠ **Needs review** — it cannot run until a person grants: {review.missing.describe()} "
        f"(open it in the chat and click **Grant**, or `agentflow grant {name} --version {label}`)"
        if review.needs_review
        else "✓ **Granted** — it may run."
    )
    records = flow.store.list_grants(name)[:5]
    grants = [
        f"- {queries.when(record.granted_at)} by **{record.granted_by}**{_for_version(record.version, by_hash)}: "
        f"{Capabilities.from_dict(record.capabilities).describe()}" + (f" — {record.note}" if record.note else "")
        for record in records
    ]
    history = (
        f"**Grants of {name}** (newest first; together they are what it may use):\n" + "\n".join(grants)
        if grants
        else f"No one has granted {name} anything yet."
    )
    return f"**{label} uses:** {review.wanted.describe()}\n\n{state}\n\n{history}"


def _for_version(version: str | None, by_hash: dict[str, WorkflowVersion]) -> str:
    granted = by_hash.get(version or "")
    return f" for {versions.label(granted)}" if granted is not None else ""


def runs_html(flow: AgentFlow, name: str, stored: WorkflowVersion, by_hash: dict[str, WorkflowVersion]) -> str:
    runs = flow.store.list_runs(limit=RUN_LIMIT, workflow=name)
    if not runs:
        return "<p><b>Runs</b>: none yet. Open it in the chat and press Run, or <code>agentflow run FILE</code>.</p>"
    rows = []
    for run in runs:
        ran = by_hash.get(run.version)
        label = versions.label(ran) if ran is not None else run.version
        version_cell = link(address(name, label), label)
        if run.version == stored.version:
            version_cell = f"<b>{version_cell}</b>"
        rows.append(
            f"<tr><td>{link(run_address(run.id), run.id[: queries.SHORT_ID], css='run-link')}</td>"
            f"<td>{version_cell}</td><td>{escape(run.status)}</td>"
            f"<td>{escape(queries.when(run.started_at or run.created_at))}</td>"
            f"<td>{escape(queries.duration(run))}</td><td>{escape(queries.money(run.cost_usd))}</td></tr>"
        )
    return (
        f"<p><b>Runs</b> of {escape(name)}, newest first ({escape(versions.label(stored))} in bold):</p>"
        '<table class="workflow-runs"><thead><tr><th>run</th><th>version</th><th>status</th><th>started</th>'
        "<th>duration</th><th>cost</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def profile_html(flow: AgentFlow, name: str) -> str:
    """Per-node p50/p95, share of the critical path and cost over the recent finished runs (every version)."""
    try:
        result = profile(flow.store, name, last=PROFILE_RUNS)
    except SpecErrors as exc:
        return f"<p><b>Profile</b>: cannot be made, a version it ran no longer validates ({escape(str(exc))}).</p>"
    if not result.runs:
        return "<p><b>Profile</b>: no finished runs yet.</p>"
    bottleneck = result.bottleneck
    summary = (
        f"bottleneck <b>{escape(bottleneck.node_id)}</b> ({bottleneck.critical_share:.0%} of the critical path)"
        if bottleneck
        else "no bottleneck"
    )
    rows = "".join(
        f"<tr><td>{escape(node.node_id)}{' ← bottleneck' if node.bottleneck else ''}</td>"
        f"<td>{escape(node.node_type)}</td><td>{node.executions}</td><td>{node.p50_ms:.1f}</td>"
        f"<td>{node.p95_ms:.1f}</td><td>{node.retry_rate:.0%}</td><td>{node.critical_share:.0%}</td>"
        f"<td>{escape(queries.money(node.cost_usd))}</td></tr>"
        for node in result.nodes
    )
    return (
        f"<p><b>Profile</b> of the last {result.runs} finished run{'s' if result.runs != 1 else ''}: {summary}</p>"
        '<table class="workflow-profile"><thead><tr><th>node</th><th>type</th><th>runs</th><th>p50 ms</th>'
        "<th>p95 ms</th><th>retries</th><th>critical path</th><th>cost</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


# -- deployment ---------------------------------------------------------------------------


def can_roll_back(current: Deployment | None, history: list[Deployment]) -> bool:
    """Whether another version was deployed before the one in force (what `rollback` would deploy)."""
    return current is not None and any(item.version not in (None, current.version) for item in history)


def deployment_html(flow: AgentFlow, stored: WorkflowVersion, current: Deployment | None) -> str:
    """The version in force (its label, who deployed it, when) or "not deployed"; and whether it is the one shown."""
    name, shown = stored.name, versions.label(stored)
    if current is None:
        return (
            "<h4>Deployment</h4><p><b>Not deployed</b>: no webhook, schedule or chat message starts it. "
            f"<b>Deploy {escape(shown)}</b> makes this version the one its triggers fire (once it is granted).</p>"
        )
    deployed = version_label(flow, name, current.version)
    verb = "rolled back to" if current.action == "rollback" else "deployed"
    lines = [
        "<h4>Deployment</h4>",
        f'<p class="deployment-state">{link(address(name, deployed), deployed)} is deployed — {verb} by '
        f"<b>{escape(current.deployed_by)}</b>, {escape(queries.when(current.deployed_at))}"
        + (f" ({escape(current.note)})" if current.note else "")
        + "</p>",
    ]
    if current.version != stored.version:
        lines.append(f"<p>The triggers fire {escape(deployed)}, not {escape(shown)} shown here.</p>")
    return "".join(lines)


def triggers_html(flow: AgentFlow, name: str, current: Deployment | None) -> str:
    """The live triggers, the last deliveries (each run linked) and the deployment history."""
    parts = []
    if current is not None:
        parts.append(_live_triggers_table(flow, name))
    found = flow.store.deliveries(name, limit=DELIVERY_LIMIT)
    if found:
        rows = "".join(
            f'<tr class="delivery-{escape(delivery.outcome)}"><td>{escape(queries.when(delivery.at))}</td>'
            f"<td>{escape(delivery.channel)}</td><td>{escape(delivery.trigger)}</td>"
            f"<td>{escape(delivery.outcome)}</td><td>{escape(delivery.detail or '')}</td>"
            f"<td>{_run_cell(delivery.run_id)}</td></tr>"
            for delivery in found
        )
        parts.append(
            "<p><b>Last deliveries</b>, newest first:</p>"
            '<table class="workflow-deliveries"><thead><tr><th>time</th><th>channel</th><th>trigger</th>'
            f"<th>outcome</th><th>detail</th><th>run</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    elif current is not None:
        parts.append("<p><b>Last deliveries</b>: none yet.</p>")
    history = flow.store.deployment_history(name, limit=HISTORY_LIMIT)
    if history:
        items = "".join(
            f"<li>{escape(queries.when(item.deployed_at))} — {escape(item.action)} "
            + (f"<b>{escape(version_label(flow, name, item.version))}</b> " if item.version is not None else "")
            + f"by {escape(item.deployed_by)}"
            + (f" <small>({escape(item.note)})</small>" if item.note else "")
            + "</li>"
            for item in history
        )
        parts.append(f'<p><b>Deployment history</b>, newest first:</p><ul class="deployment-history">{items}</ul>')
    return "".join(parts)


def _run_cell(run_id: str | None) -> str:
    return link(run_address(run_id), run_id[: queries.SHORT_ID], css="run-link") if run_id else "—"


def _url_cell(url: str | None) -> str:
    # A URL is one long word: let it break, or the table runs past the column.
    return f'<code style="word-break: break-all">{escape(url)}</code>' if url else "—"


def _live_triggers_table(flow: AgentFlow, name: str) -> str:
    from agentflow.triggers.deployments import DeployError

    try:
        live = live_triggers(flow, name)
    except (DeployError, SpecErrors) as exc:  # a deployed version gone or no longer valid: say so, not fail the view
        return f"<p><b>Triggers</b>: cannot be listed ({escape(str(exc))}).</p>"
    if not live:
        return "<p><b>Triggers</b>: the deployed version declares none (add <code>triggers:</code> to it).</p>"
    rows = "".join(
        f"<tr><td>{escape(trigger.info.name)}</td><td>{escape(trigger.info.kind)}</td>"
        f"<td>{escape(trigger.info.detail)}</td>"
        f"<td>{_url_cell(trigger.url)}</td>"
        f"<td>{escape(trigger.next_fire or '—')}</td></tr>"
        for trigger in live
    )
    return (
        f"<p><b>Triggers</b> of {escape(live[0].info.version_label)}, live:</p>"
        '<table class="workflow-triggers"><thead><tr><th>trigger</th><th>kind</th><th>what fires it</th>'
        f"<th>webhook URL</th><th>next fire</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def deployed_text(flow: AgentFlow, result: DeployResult) -> str:
    """What a deploy or rollback did, with the new webhook secrets: the one time the page shows them."""
    name = result.stored.name
    verb = "Rolled back to" if result.deployment.action == "rollback" else "Deployed"
    before = ""
    if result.previous is not None and result.previous.version != result.stored.version:
        before = f" (was {version_label(flow, name, result.previous.version)})"
    lines = [f"✓ **{verb} {versions.title(result.stored)}**{before}."]
    if result.secrets:
        lines.append(
            "**New webhook signing secret — shown only this once.** Copy it now (the copy button at the "
            "block's corner) and give it to the sender: the page will not show it again."
        )
        for trigger, secret in result.secrets.items():
            lines.append(
                f"Trigger **{trigger}** (lost it? `agentflow hooks secret {name} --trigger {trigger} --rotate` "
                f"makes a new one):\n\n```text\n{secret}\n```"
            )
    return "\n\n".join(lines)

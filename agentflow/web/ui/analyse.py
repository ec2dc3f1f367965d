"""The run console's Analyse action: a model's reading of the open run's trace (agentflow/analyse.py).

One button and the Markdown it fills; the Runs tab places them with `build(state, run_id)`. The
answer is asked for, never automatic: each click is a model call, priced in the ledger as "analyse".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from agentflow.web.ui.chat import engine_of

if TYPE_CHECKING:
    from agentflow.web.server import AppState

PICK_FIRST = "Open a run first, then ask for its analysis."


def build(state: AppState, run_id: gr.State) -> None:
    """An "Analyse" button and its answer, for the run whose id `run_id` holds."""
    with gr.Accordion("Analyse with a model", open=False, elem_id="run-analyse"):
        gr.Markdown(
            "Sends this run's trace (secrets redacted, long values cut) to AGENTFLOW_ANALYSE_MODEL or the "
            "chat's model, and shows its reading: a root cause and the spans it points at."
        )
        button = gr.Button("Analyse", elem_id="run-analyse-button")
        answer = gr.Markdown(elem_id="run-analysis")

    async def analyse(chosen: str) -> str:
        return await analysis_markdown(state, chosen)

    button.click(analyse, inputs=run_id, outputs=answer, api_visibility="private", concurrency_limit=None)


async def analysis_markdown(state: AppState, run_id: str) -> str:
    """The analysis of a run as Markdown, or what stopped it."""
    from agentflow.analyse import AnalyseError, analyse_run
    from agentflow.engine.budget import BudgetExceededError

    if not run_id:
        return PICK_FIRST
    flow = engine_of(state).flow
    run = flow.store.get_run(run_id)
    if run is None:
        return f"No run `{run_id}` here: pick one from the list."
    try:
        analysis = await analyse_run(flow, run)
    except (AnalyseError, BudgetExceededError) as exc:
        return f"**Could not analyse this run:** {exc}"
    return analysis.markdown()

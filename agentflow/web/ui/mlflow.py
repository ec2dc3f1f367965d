"""The MLflow tab: MLflow's own UI (experiments, one per workflow, and their traces), embedded in the page.

It shows `/mlflow/` on this port (agentflow/web/mlflow_mount.py), or, when
MLFLOW_TRACKING_URI names an MLflow server, that server's UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

import gradio as gr

from agentflow.web.mlflow_mount import MlflowTarget

if TYPE_CHECKING:
    from agentflow.web.server import AppState

FRAME_NAME = "agentflow-mlflow"


@dataclass
class MlflowTab:
    where: gr.Markdown
    frame: gr.HTML


def where(target: MlflowTarget) -> str:
    """One line saying where traces live and how to open MLflow by itself."""
    open_link = f"[open MLflow in a new tab]({target.embed_url})"
    if target.external_url is not None:
        return (
            f"Traces go to the MLflow server at `{target.tracking_uri}` (MLFLOW_TRACKING_URI), shown below from "
            f"that server — your browser must reach it, and it must allow being framed; or {open_link}."
        )
    return (
        f"Traces are stored in `{target.tracking_uri}`, one experiment per workflow (set MLFLOW_TRACKING_URI to "
        f"use another MLflow). The first visit starts MLflow, which takes a few seconds; or {open_link}."
    )


def frame(url: str) -> str:
    return (
        f'<iframe src="{escape(url)}" name="{FRAME_NAME}" title="MLflow" loading="lazy" '
        'style="width: 100%; height: calc(100vh - 180px); min-height: 640px; border: 0;"></iframe>'
    )


def build(state: AppState) -> MlflowTab:
    target = MlflowTarget.from_settings(state.settings)
    return MlflowTab(
        where=gr.Markdown(where(target), elem_id="mlflow-where"),
        frame=gr.HTML(frame(target.embed_url), elem_id="mlflow-frame"),
    )

"""`agentflow optimize`: a better prompt for one node, proposed as a new workflow version, never applied by itself.

A round: the node's prompt is registered in MLflow's prompt registry as `WORKFLOW.NODE` (a new version
only when its text changed), `mlflow.genai.optimize_prompts` improves it (MetaPromptOptimizer, or GEPA
when the `gepa` package is installed) with a predict function that runs the node alone through the
engine with each candidate, then current and proposed are evaluated on the same cases. The result is a
*proposal* (proposals.py): the proposed YAML, its diff, both evaluations. Only a person's
`agentflow optimize accept ID` saves it, as a new version that needs its grant like any other.

Our templates write `{{ inputs.ticket }}` (JMESPath); MLflow's `{{var}}` takes a word, so each
expression is given a variable name (`inputs_ticket`) for the optimiser and put back afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.evals import scorers as scoring
from agentflow.evals.dataset import Case
from agentflow.evals.evaluate import EvalError, EvalOptions, Prepared, evaluate_target, prepare
from agentflow.evals.judge import JudgeError, JudgeModel, endpoint, judge_model
from agentflow.evals.proposals import Proposal, ProposalError, new_proposal, replace_prompt, save
from agentflow.evals.target import Target as EvalTarget
from agentflow.evals.target import TargetError, node_alone, prompt_field, save_derived

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

OPTIMIZERS = ("metaprompt", "gepa")
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)


class OptimizeError(ValueError):
    """Why a round cannot start or finish; the message says what to change."""


@dataclass(frozen=True, slots=True)
class OptimizeOptions:
    workflow: str
    node: str
    cases: Sequence[Case]
    optimizer: str = "metaprompt"
    model: str | None = None
    """The optimiser's (reflection) model; default the judge model (AGENTFLOW_JUDGE_MODEL)."""
    scorers: Sequence[str] = scoring.DEFAULT_SCORERS
    judge: str | None = None
    version: str | None = None
    by: str = "unknown"


@dataclass(frozen=True, slots=True)
class Template:
    """A prompt as MLflow's registry holds it, and how to put our expressions back."""

    text: str
    expressions: dict[str, str]  # variable -> the original `{{ ... }}`

    @classmethod
    def of(cls, prompt: str) -> Template:
        expressions: dict[str, str] = {}
        by_segment: dict[str, str] = {}

        def variable(match: re.Match[str]) -> str:
            segment = match.group(0)
            if segment not in by_segment:
                base = re.sub(r"\W+", "_", match.group(1).strip()).strip("_") or "value"
                name, number = base, 2
                while name in expressions:
                    name, number = f"{base}_{number}", number + 1
                expressions[name] = segment
                by_segment[segment] = name
            return "{{" + by_segment[segment] + "}}"

        return cls(_EXPRESSION.sub(variable, prompt), expressions)

    def ours(self, text: str) -> str:
        """An MLflow template (the optimiser's) with our expressions back in place of its variables."""
        return re.sub(r"\{\{(\w+)\}\}", lambda match: self.expressions.get(match.group(1), match.group(0)), text)


def optimizer_for(name: str, model: JudgeModel) -> Any:
    if name not in OPTIMIZERS:
        raise OptimizeError(f"unknown optimizer '{name}'; choose metaprompt (the default) or gepa")
    if name == "gepa":
        try:
            import gepa  # noqa: F401
        except ImportError:
            raise OptimizeError(
                "the gepa optimizer needs the gepa package: pip install gepa (in the app's environment), "
                "or use --optimizer metaprompt"
            ) from None
        from mlflow.genai.optimize.optimizers import GepaPromptOptimizer

        return GepaPromptOptimizer(reflection_model=model.uri)
    from mlflow.genai.optimize.optimizers import MetaPromptOptimizer

    return MetaPromptOptimizer(reflection_model=model.uri)


async def optimize(flow: AgentFlow, options: OptimizeOptions) -> Proposal:
    """One round: optimise the node's prompt on the cases and propose the result (saved as a proposal file)."""
    evaluation = EvalOptions(
        options.workflow,
        options.cases,
        scorers=options.scorers,
        version=options.version,
        node=options.node,
        judge=options.judge,
        by=options.by,
    )
    try:
        prepared = prepare(flow, evaluation)  # every case and scorer is checked before anything runs
        chosen = prepared.target
        field = prompt_field(chosen.workflow, options.node)
        current = str(getattr(chosen.workflow.spec.nodes[options.node], field))
        if current.strip().startswith("prompts:/"):
            raise OptimizeError(
                f"node '{options.node}' reads its prompt from the registry ({current.strip()}); optimise the "
                "registered prompt in MLflow, or put its text in the YAML for this round"
            )
        model = judge_model(flow.settings, options.model or options.judge, what="the prompt optimiser")
        optimizer = optimizer_for(options.optimizer, model)
    except (TargetError, JudgeError) as exc:
        raise OptimizeError(str(exc)) from None
    except EvalError as exc:
        raise OptimizeError(str(exc)) from None
    template = Template.of(current)
    loop = asyncio.get_running_loop()
    proposed_text = await asyncio.to_thread(_round, flow, prepared, options, template, optimizer, model, loop)
    proposed = template.ours(proposed_text)
    try:
        proposed_source = replace_prompt(chosen.source.source, options.node, field, proposed)
        flow.load(proposed_source)
    except ProposalError as exc:
        raise OptimizeError(str(exc)) from None
    current_report = await evaluate_target(flow, evaluation, prepared)
    candidate = _with_prompt(flow, chosen, proposed, by=options.by)
    proposed_report = await evaluate_target(flow, evaluation, Prepared(candidate, prepared.scorers, prepared.judge))
    proposal = new_proposal(
        stored=chosen.source,
        node=options.node,
        optimizer=options.optimizer,
        current_prompt=current,
        proposed_prompt=proposed,
        proposed_source=proposed_source,
        current=current_report.to_dict(),
        proposed=proposed_report.to_dict(),
    )
    save(flow.settings.home, proposal)
    return proposal


def _with_prompt(flow: AgentFlow, chosen: EvalTarget, prompt: str, *, by: str) -> EvalTarget:
    assert chosen.node is not None
    source, ancestors = node_alone(chosen.source, chosen.workflow, chosen.node, prompt=prompt)
    derived = save_derived(flow, chosen.source, chosen.workflow, source, by=by)
    return EvalTarget(flow, chosen.source, chosen.workflow, chosen.node, derived, ancestors)


def _round(
    flow: AgentFlow,
    prepared: Prepared,
    options: OptimizeOptions,
    template: Template,
    optimizer: Any,
    model: JudgeModel,
    loop: asyncio.AbstractEventLoop,
) -> str:
    """The MLflow part, in a worker thread: register, optimise with runs on `loop`; the proposed MLflow text."""
    from agentflow.evals.mlflow_log import TURN, experiment_of, import_mlflow, tracking

    mlflow, tracking_uri = import_mlflow(flow.settings)
    experiment_id = experiment_of(flow.settings, prepared.target.source.name)
    chosen = prepared.target
    name = f"{chosen.source.name}.{options.node}"
    scorers = scoring.build(prepared.scorers, judge=prepared.judge)
    train = [{"inputs": case.inputs, "expectations": case.expectations} for case in options.cases]
    run_name = f"optimize {name}"
    with TURN, tracking(mlflow, tracking_uri), endpoint(model), _skip_trial_call():
        uri = _registered(mlflow, name, template.text, chosen.source.version)

        @mlflow.trace(name=f"{name} candidate")
        def predict_fn(**inputs: Any) -> Any:
            candidate = template.ours(mlflow.genai.load_prompt(uri).template)  # the optimiser's candidate
            case = Case(inputs, {}, "optimizer")
            future = asyncio.run_coroutine_threadsafe(_predict(flow, chosen, candidate, case, options.by), loop)
            return future.result()

        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={"agentflow.optimize": "1"}):
            result = mlflow.genai.optimize_prompts(
                predict_fn=predict_fn, train_data=train, prompt_uris=[uri], optimizer=optimizer, scorers=scorers
            )
    return str(result.optimized_prompts[0].template)


async def _predict(flow: AgentFlow, chosen: EvalTarget, prompt: str, case: Case, by: str) -> Any:
    from agentflow.evals.runner import run_cases

    runs = await run_cases(_with_prompt(flow, chosen, prompt, by=by), [case], concurrency=1)
    if not runs[0].ok:
        raise RuntimeError(f"the node's run {runs[0].run_id} {runs[0].status}: {runs[0].error}")
    return runs[0].output


def _registered(mlflow: Any, name: str, text: str, version: str) -> str:
    """The registry URI of `text` under `name`: its latest version when the text is the same, else a new one."""
    try:
        latest = mlflow.genai.load_prompt(f"prompts:/{name}@latest")
    except Exception:  # not registered yet
        latest = None
    if latest is not None and latest.template == text:
        return f"prompts:/{name}/{latest.version}"
    registered = mlflow.genai.register_prompt(
        name=name,
        template=text,
        commit_message=f"the prompt of workflow version {version[:12]}",
        tags={"agentflow.workflow": name.rsplit(".", 1)[0], "agentflow.node": name.rsplit(".", 1)[1]},
    )
    return f"prompts:/{name}/{registered.version}"


class _skip_trial_call:
    """MLflow calls predict_fn once to check it traces; here that would be a real run: the check is skipped."""

    NAME = "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION"

    def __enter__(self) -> None:
        self.saved = os.environ.get(self.NAME)
        os.environ[self.NAME] = "true"

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop(self.NAME, None)
        else:
            os.environ[self.NAME] = self.saved

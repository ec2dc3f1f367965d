"""Load and check a workflow, reporting every problem at once with file:line:column.

Order: safe YAML loading; the pydantic models; then, on the raw data so they
report alongside model errors, node ids, expressions, templates, `${env:...}`
placement and tool names; and the graph once the models hold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentflow.prompts.refs import FIELDS as PROMPT_FIELDS
from agentflow.prompts.refs import PromptRefError, is_ref, parse_ref
from agentflow.spec.errors import SpecError, SpecErrors
from agentflow.spec.expressions import (
    ENV_REF,
    ExpressionError,
    compile_expression,
    referenced_inputs,
    referenced_roots,
    static_url_host,
    template_expressions,
)
from agentflow.spec.graph import analyze
from agentflow.spec.loader import MAX_FILE_BYTES, LoadedDocument, load_yaml
from agentflow.spec.model_errors import DataPath, describe, dotted, model_error_messages, suggest, value_at
from agentflow.spec.models import NODE_ID_PATTERN, RESERVED_IDS, ChatTrigger, Workflow, trigger_names
from agentflow.spec.subworkflows import WorkflowCatalog, check_subworkflows

BUILTIN_TOOL_NAMES = ("http_request", "calculator", "json_query", "current_time")
BUILTIN_NETWORK_TOOLS = ("http_request",)

_TEMPLATE_FIELDS = {
    "llm": ("prompt", "system"),
    "agent": ("instructions", "input"),
    "approval": ("message",),
    "tool": ("args",),
    "code": ("input",),
    "workflow": ("inputs",),
    "remote": ("input", "data"),
}
_EXPRESSION_FIELDS = {"transform": ("expr",), "map": ("over",)}
_MODEL_FACING = frozenset({"prompt", "system", "instructions", "input", "message"})
_ENV_START = "${env:"


class _Report:
    """Errors collected against one loaded document."""

    def __init__(self, document: LoadedDocument, filename: str) -> None:
        self.document = document
        self.filename = filename
        self.errors: list[SpecError] = []

    def add(self, path: DataPath, message: str) -> None:
        line, column = self.document.position(path)
        self.errors.append(SpecError(self.filename, line, column, message))

    def raise_if_any(self) -> None:
        if self.errors:
            unique = dict.fromkeys(self.errors)
            raise SpecErrors(sorted(unique, key=lambda error: (error.line, error.column)))


def load_workflow(
    text: str | bytes,
    filename: str = "<string>",
    known_tools: Collection[str] | None = None,
    network_tools: Collection[str] = BUILTIN_NETWORK_TOOLS,
    workflows: WorkflowCatalog | None = None,
) -> Workflow:
    """Parse and validate a workflow; raise `SpecErrors` listing every problem found.

    `network_tools` reach the network: a workflow using one must say where (`spec.permissions.egress`),
    unless a tool node's URL is literal. `workflows`: the stored workflows its `workflow` nodes may call
    (None: a lone file, whose callees are not checked).
    """
    document = load_yaml(text, filename)
    report = _Report(document, filename)
    data = document.data
    if not isinstance(data, dict):
        report.add((), "a workflow is a mapping with apiVersion, kind, metadata and spec; see docs/workflow-spec.md")
        report.raise_if_any()
    workflow: Workflow | None = None
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as error:
        for path, message in model_error_messages(error, data):
            report.add(path, message)
    _check_data(data, report, known_tools)
    _check_egress(data, report, network_tools)
    if workflow is not None:
        for problem in analyze(workflow).problems:
            report.add(problem.path, problem.message)
        _check_triggers(workflow, report)
        check_subworkflows(workflow, workflows, report.add)
    report.raise_if_any()
    assert workflow is not None
    return workflow


def load_workflow_file(
    path: str | os.PathLike[str],
    known_tools: Collection[str] | None = None,
    network_tools: Collection[str] = BUILTIN_NETWORK_TOOLS,
) -> Workflow:
    """Read a workflow file (refusing oversized ones before reading) and validate it."""
    name = os.fspath(path)
    try:
        if Path(path).stat().st_size > MAX_FILE_BYTES:
            message = f"the file is larger than {MAX_FILE_BYTES} bytes, the limit for a workflow; split it"
            raise SpecErrors([SpecError(name, 1, 1, message)])
        with open(path, "rb") as handle:
            # Bounded read: a FIFO or a growing file reports a small size and may never end.
            source = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise SpecErrors([SpecError(name, 1, 1, f"cannot read the workflow file: {error.strerror or error}")]) from None
    return load_workflow(source, name, known_tools, network_tools)


def _nodes(data: dict[str, Any]) -> Iterator[tuple[DataPath, dict[str, Any], bool]]:
    """(path, node, is_inner) for each node mapping, the inner nodes of maps included."""
    nodes = value_at(data, ("spec", "nodes"))
    if not isinstance(nodes, dict):
        return
    for node_id, node in nodes.items():
        if not isinstance(node, dict):
            continue
        path = ("spec", "nodes", node_id)
        yield path, node, False
        if node.get("type") == "map" and isinstance(node.get("node"), dict):
            yield (*path, "node"), node["node"], True


def _check_data(data: dict[str, Any], report: _Report, known_tools: Collection[str] | None) -> None:
    nodes = value_at(data, ("spec", "nodes"))
    node_ids = [key for key in nodes if isinstance(key, str)] if isinstance(nodes, dict) else []
    inputs = value_at(data, ("spec", "inputs"))
    declared = list(inputs) if isinstance(inputs, dict) else []
    for node_id in node_ids:
        _check_node_id(node_id, report)
    scope = _Scope(report, node_ids, declared)
    for path, node, inner in _nodes(data):
        kind = node.get("type")
        # A map's `over` is evaluated outside the fan-out, so `item` is not in its scope.
        scope.inner = inner
        expressions = [((*path, field), node.get(field)) for field in _EXPRESSION_FIELDS.get(str(kind), ())]
        cases = node.get("cases") if kind == "switch" else None
        for index, case in enumerate(cases if isinstance(cases, list) else []):
            if isinstance(case, dict):
                expressions.append(((*path, "cases", index, "when"), case.get("when")))
        loop = node.get("loop")
        if isinstance(loop, dict):
            expressions.append(((*path, "loop", "until"), loop.get("until")))
        for field_path, text in expressions:
            scope.expression(field_path, text, scope.where(field_path, path))
        for field in _TEMPLATE_FIELDS.get(str(kind), ()):
            scope.templates((*path, field), node.get(field), path)
        if kind in ("llm", "agent"):
            _check_memory_templates(scope, (*path, "memory"), node.get("memory"), path)
            _check_prompts(scope, path, node, str(kind))
        if known_tools is not None:
            _check_tools(path, node, known_tools, report)
    scope.inner = False
    scope.templates(("spec", "outputs"), value_at(data, ("spec", "outputs")), ("spec",))
    _check_memory_templates(scope, ("spec", "memory"), value_at(data, ("spec", "memory")), ("spec",))
    _check_env(data, report)


def _check_node_id(node_id: str, report: _Report) -> None:
    path = ("spec", "nodes", node_id)
    if not re.match(NODE_ID_PATTERN, node_id):
        fixed = re.sub(r"\W", "_", node_id) or "node"
        fixed = fixed if re.match(NODE_ID_PATTERN, fixed) else f"node_{fixed}"
        report.add(
            path, f"node id '{node_id}' must be letters, digits and _ (not starting with a digit); use '{fixed}'"
        )
    elif node_id in RESERVED_IDS:
        reserved = ", ".join(sorted(RESERVED_IDS))
        report.add(path, f"node id '{node_id}' is reserved ({reserved}); rename it, e.g. '{node_id}_node'")


class _Scope:
    """Checks expressions against the names they may read: inputs, node ids, and item/index inside a map."""

    def __init__(self, report: _Report, node_ids: list[str], inputs: list[str]) -> None:
        self.report = report
        self.node_ids = node_ids
        self.inputs = inputs
        self.inner = False
        self.extra: tuple[str, ...] = ()
        """More names a field may read (`output` in what memory saves)."""

    def where(self, path: DataPath, owner: DataPath) -> str:
        """ "'prompt' of node 'x' (llm)" for a field of a node, "'spec.outputs.reply'" elsewhere."""
        if owner[:2] == ("spec", "nodes"):
            return f"'{dotted(path[len(owner) :])}' of {describe(owner, self.report.document.data)}"
        return f"'{dotted(path)}'"

    def expression(self, path: DataPath, text: Any, where: str) -> None:
        if not isinstance(text, str):
            return
        try:
            compile_expression(text)
        except ExpressionError as error:
            self.report.add(path, f"invalid JMESPath in {where}: {error}")
            return
        inner = ("item", "index") if self.inner else ()
        roots = list(dict.fromkeys(["inputs", *self.node_ids, *inner, *self.extra]))
        for root in sorted(referenced_roots(text) - set(roots)):
            hint = suggest(root, roots, "it can read")
            if root in ("item", "index"):
                hint = "item and index exist only inside a map's `node`"
            elif f'"{root}"' in text:
                hint = f"to compare with the text {root}, quote it with single quotes: '{root}'"
            self.report.add(path, f"{where} reads '{root}', which is not an input, a node id or item/index; {hint}")
        for name in sorted(referenced_inputs(text) - set(self.inputs)):
            hint = suggest(name, self.inputs, "declared inputs are") or "declare it under spec.inputs"
            self.report.add(path, f"input '{name}' used in {where} is not declared in spec.inputs; {hint}")

    def templates(self, field_path: DataPath, value: Any, owner: DataPath) -> None:
        """Check every `{{ }}` in the strings under `field_path`, however deeply nested."""
        for path, text in _strings(field_path, value):
            if "{{" not in text:
                continue
            where = self.where(path, owner)
            try:
                expressions = template_expressions(text)
            except ExpressionError as error:
                self.report.add(path, f"invalid template in {where}: {error}")
                continue
            for expression in expressions:
                self.expression(path, expression, where)


def _check_memory_templates(scope: _Scope, path: DataPath, memory: Any, owner: DataPath) -> None:
    """`recall.query` reads what a prompt reads; `save.text` may also read `output`, the node's result."""
    if not isinstance(memory, dict):
        return
    recall = memory.get("recall")
    if isinstance(recall, dict):
        scope.templates((*path, "recall", "query"), recall.get("query"), owner)
    save = memory.get("save")
    text = save if isinstance(save, str) and save != "auto" else save.get("text") if isinstance(save, dict) else None
    where = (*path, "save") if isinstance(save, str) else (*path, "save", "text")
    scope.extra = ("output",)
    try:
        scope.templates(where, text, owner)
    finally:
        scope.extra = ()


def _check_prompts(scope: _Scope, path: DataPath, node: dict[str, Any], kind: str) -> None:
    """Registry references are well written; variants have names of their own and templates that read what exists."""
    places: list[tuple[DataPath, dict[str, Any]]] = [(path, node)]
    variants = node.get("variants")
    names: dict[str, int] = {}
    for index, variant in enumerate(variants if isinstance(variants, list) else []):
        if not isinstance(variant, dict):
            continue
        where = (*path, "variants", index)
        places.append((where, variant))
        for field in PROMPT_FIELDS[kind]:
            scope.templates((*where, field), variant.get(field), path)
        name = variant.get("name")
        if isinstance(name, str) and name in names:
            scope.report.add(
                (*where, "name"),
                f"variant '{name}' of {describe(path, scope.report.document.data)} is named twice "
                f"(entries {names[name] + 1} and {index + 1} of `variants`); give each variant a name of its own",
            )
        elif isinstance(name, str):
            names[name] = index
    for owner, mapping in places:
        for field in PROMPT_FIELDS[kind]:
            value = mapping.get(field)
            if is_ref(value):
                try:
                    parse_ref(value)
                except PromptRefError as error:
                    scope.report.add((*owner, field), f"{scope.where((*owner, field), path)}: {error}")


def _strings(path: DataPath, value: Any) -> Iterator[tuple[DataPath, str]]:
    """Every string under `value` with its path; iterative, so deep data cannot exhaust the stack."""
    stack: list[tuple[DataPath, Any]] = [(path, value)]
    while stack:
        path, current = stack.pop()
        if isinstance(current, dict):
            stack.extend(((*path, key), item) for key, item in reversed(current.items()))
        elif isinstance(current, list):
            stack.extend(((*path, index), item) for index, item in reversed(list(enumerate(current))))
        elif isinstance(current, str):
            yield path, current


def _check_tools(path: DataPath, node: dict[str, Any], known_tools: Collection[str], report: _Report) -> None:
    names: list[tuple[DataPath, Any]] = []
    if node.get("type") == "tool":
        names.append(((*path, "tool"), node.get("tool")))
    if node.get("type") == "agent" and isinstance(node.get("tools"), list):
        names.extend(((*path, "tools", index), name) for index, name in enumerate(node["tools"]))
    for tool_path, name in names:
        if isinstance(name, str) and name not in known_tools:
            hint = suggest(name, sorted(known_tools), "available tools are")
            report.add(tool_path, f"unknown tool '{name}'; {hint}".rstrip("; "))


def _check_egress(data: dict[str, Any], report: _Report, network_tools: Collection[str]) -> None:
    """A network tool needs to know where it may go: declared egress, or a literal URL on a tool node.

    Checked only once everything else holds: it is advice about a workflow that otherwise makes sense.
    """
    declared = value_at(data, ("spec", "permissions", "egress"))
    if report.errors or (isinstance(declared, list) and declared):
        return
    for path, node, _ in _nodes(data):
        kind = node.get("type")
        if kind == "tool" and node.get("tool") in network_tools:
            args = node.get("args")
            url = args.get("url") if isinstance(args, dict) else None
            if static_url_host(url):
                continue  # the host is known statically; it joins the capabilities by itself
            where, tool = (*path, "args", "url") if isinstance(url, str) else (*path, "tool"), node.get("tool")
            unfixed = "this URL is not fixed" if isinstance(url, str) else "the hosts it reaches are not fixed"
        elif kind == "agent" and isinstance(node.get("tools"), list):
            tool = next((name for name in node["tools"] if name in network_tools), None)
            if tool is None:
                continue
            where, unfixed = (*path, "tools", node["tools"].index(tool)), "the model chooses where it goes"
        else:
            continue
        report.add(
            where,
            f"tool '{tool}' reaches the network, and {unfixed}: list the hosts it may reach under "
            "spec.permissions.egress (e.g. `permissions: {egress: [api.example.com]}`; *.example.com for "
            "subdomains, * for any public host); a person grants them before the workflow runs",
        )


def _env_allowed(path: DataPath, data: Any) -> bool:
    """Tool args and a webhook trigger's secret are the only places `${env:...}` is resolved."""
    if len(path) >= 4 and path[:2] == ("spec", "nodes"):
        node = value_at(data, path[:3])
        if path[3] == "args":
            return isinstance(node, dict) and node.get("type") == "tool"
        inner = value_at(data, (*path[:3], "node"))
        return path[3:5] == ("node", "args") and isinstance(inner, dict) and inner.get("type") == "tool"
    return len(path) == 5 and path[:2] == ("spec", "triggers") and path[3:] == ("webhook", "secret")


def _check_env(data: Any, report: _Report) -> None:
    for path, text in _strings((), data):
        if _ENV_START in text:
            _check_env_string(path, text, data, report)
    triggers = value_at(data, ("spec", "triggers"))
    for index in range(len(triggers) if isinstance(triggers, list) else 0):
        path = ("spec", "triggers", index, "webhook", "secret")
        secret = value_at(data, path)
        if isinstance(secret, str) and not ENV_REF.fullmatch(secret):
            report.add(path, "write the webhook secret as ${env:NAME}; secrets are never written in YAML")


def _check_env_string(path: DataPath, value: str, data: Any, report: _Report) -> None:
    starts = [match.start() for match in re.finditer(re.escape(_ENV_START), value)]
    if any(not ENV_REF.match(value, start) for start in starts):
        report.add(path, "malformed environment reference: write ${env:NAME}, NAME of letters, digits and _")
    elif _env_allowed(path, data):
        return
    elif path[:2] == ("spec", "outputs") or (path[:2] == ("spec", "nodes") and set(path[3:5]) & _MODEL_FACING):
        report.add(path, "${env:...} is not allowed here: secrets never reach the model: pass them in tool args only")
    else:
        report.add(path, "${env:...} is resolved only in tool args and a webhook trigger's secret; remove it from here")


def _check_triggers(workflow: Workflow, report: _Report) -> None:
    """Trigger names are unique; the inputs they fill are declared; chat triggers say which input gets the text."""
    declared = list(workflow.spec.inputs)
    seen: dict[str, int] = {}
    for index, (trigger, name) in enumerate(
        zip(workflow.spec.triggers, trigger_names(workflow.spec.triggers), strict=True)
    ):
        path: DataPath = ("spec", "triggers", index, trigger.kind)
        if name in seen:
            report.add(path, f"two triggers are named '{name}'; give each its own `name:`")
        seen[name] = index

        def undeclared(key: str, where: DataPath, name: str = name) -> None:
            hint = suggest(key, declared, "declared inputs are") or "declare it under spec.inputs"
            report.add(where, f"trigger '{name}' fills input '{key}', which is not declared in spec.inputs; {hint}")

        config = trigger.config
        if trigger.webhook is not None:
            for key, expression in (trigger.webhook.inputs or {}).items():
                if key not in declared:
                    undeclared(key, (*path, "inputs", key))
                try:
                    compile_expression(expression)
                except ExpressionError as error:
                    report.add(
                        (*path, "inputs", key), f"invalid JMESPath for input '{key}' of trigger '{name}': {error}"
                    )
        elif trigger.schedule is not None:
            for key in trigger.schedule.inputs:
                if key not in declared:
                    undeclared(key, (*path, "inputs", key))
        elif isinstance(config, ChatTrigger):
            if config.input is not None and config.input not in declared:
                undeclared(config.input, (*path, "input"))
            elif config.input is None and len(declared) != 1:
                choices = ", ".join(declared) or "none is declared"
                report.add(
                    path,
                    f"trigger '{name}' must say which input receives the message: add `input: NAME` ({choices})",
                )

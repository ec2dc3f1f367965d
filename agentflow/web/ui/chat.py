"""The Chat tab: the streamed conversation beside the live YAML, its validation, the last diff and a Run form.

A browser keeps its session id in localStorage (`gr.BrowserState`); on load
the conversation and the workflow are rebuilt from the store, so a reload, a
closed browser or a restarted server lose nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.blocks import Block
from gradio.components import Component

from agentflow.chat.engine import ConversationEngine, Progress, Reply
from agentflow.chat.workspace import Workspace
from agentflow.spec.models import InputSpec
from agentflow.versions import VersionRef

if TYPE_CHECKING:
    from agentflow.web.server import AppState

log = logging.getLogger(__name__)

MAX_INPUTS = 8  # the Run form's fixed pool of fields; more inputs go through /run k=v
MAX_ACTIONS = 5
SESSION_KEY = "agentflow-session"
PLACEHOLDER = (
    "Describe the workflow you want — *“I want a workflow that classifies a support ticket and drafts a reply”* — "
    "or type **/help**, **/examples**, **/new hello**."
)
Updates = dict[Block, Any]  # what a handler returns: new values for some of its outputs


def engine_of(state: AppState) -> ConversationEngine:
    """The server's conversation engine, made on first use (the flow only opens when the server starts)."""
    engine: ConversationEngine = state.conversation()
    return engine


def message_text(content: Any) -> str:
    """A message's text, whether the browser sent blocks (`[{"type": "text", "text": ...}]`) or a client a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if "text" in content:
            return str(content["text"])
        return str(content.get("alt_text") or content.get("value") or "")
    if isinstance(content, list | tuple):
        return "\n".join(text for text in (message_text(item) for item in content) if text)
    return str(content)


def chat_messages(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"role": item["role"], "content": message_text(item.get("content"))} for item in history or []]


def workflow_inputs(engine: ConversationEngine, source: str | None) -> dict[str, InputSpec]:
    if not source:
        return {}
    workflow = Workspace(engine.flow, engine.history, "").validate(source).workflow
    return dict(workflow.spec.inputs) if workflow else {}


def status_line(
    errors: list[str], *, draft: int | None, applied: bool, empty: bool = False, stored: VersionRef | None = None
) -> str:
    """The editor's status; "draft" and "version" as docs/versions.md defines them."""
    if empty:
        return "No workflow yet — describe one in the chat, or type `/new` or `/examples`."
    if errors:
        count = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        return f"✗ **Not valid** — {count}, nothing applied:\n" + "\n".join(f"- {error}" for error in errors)
    if applied and stored is not None:
        return f"✓ **Valid** — draft {draft}, saved as **{stored.title}**"
    if applied:
        return f"✓ **Valid** — draft {draft}, not saved as a version yet (`/save NAME` or Run saves it)"
    return "✓ **Valid** — not applied yet: **Apply edit** makes it a new draft"


def run_line(engine: ConversationEngine, run_id: str) -> str:
    run = engine.flow.store.get_run(run_id)
    if run is None:
        return ""
    line = f"Run `{run.id[:12]}` of **{run.workflow}**: **{run.status}**"
    if run.error:
        line += f" — {run.error}"
    if run.status == "waiting_approval":
        line += f" — approve it in the Runs tab or with `/approve {run.id[:12]}`"
    return line + " · details in the **Runs** tab"


@dataclass
class ChatTab:
    """The Chat tab's components, and how a reply is shown in them."""

    state: AppState
    session: gr.BrowserState
    notice: gr.Markdown
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    actions: list[gr.Button]
    status: gr.Markdown
    editor: gr.Code
    apply: gr.Button
    fields: list[gr.Textbox]
    form_key: gr.State
    run: gr.Button
    run_status: gr.Markdown
    diff: gr.Code
    review: gr.Markdown
    grant: gr.Button
    stamp: gr.Textbox
    saved_at: dict[str, float] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)
    """The conversation each open page (Gradio's session hash) last used: a check sent before the browser
    holds its session (or while it is being stored) is still checked against that conversation's draft."""
    """Session id -> when (browser clock, ms) its last Apply was clicked."""

    @property
    def outputs(self) -> list[Component]:
        """Everything `show` may update."""
        return [
            self.session,
            self.notice,
            self.chatbot,
            self.message,
            self.send,
            *self.actions,
            self.status,
            self.editor,
            *self.fields,
            self.form_key,
            self.run_status,
            self.diff,
            self.review,
            self.grant,
        ]

    def show(
        self,
        engine: ConversationEngine,
        session_id: str,
        reply: Reply,
        form_key: str,
        *,
        edited: bool = False,
        from_form: bool = False,
    ) -> Updates:
        """The updates for a reply: YAML, status, diff, actions, the Run form, the grant and the notice.

        `edited`: the reply answers a hand edit: the editor keeps the person's text (a valid one is what
        was saved; an invalid one stays to be fixed), so keystrokes typed meanwhile are never lost.
        `from_form`: the reply answers the Run form, so a refusal is shown under the form too.
        """
        updates: Updates = {self.session: session_id}
        model = engine.model_for(Workspace(engine.flow, engine.history, session_id))
        updates[self.notice] = gr.update(
            visible=model is None, value="**No model is configured.** " + engine.not_configured()
        )
        if edited and reply.valid is False:
            updates[self.status] = status_line(reply.errors, draft=reply.draft, applied=False)
        elif edited:
            updates[self.status] = status_line([], draft=reply.draft, applied=True, stored=reply.saved)
        else:
            status = status_line([], draft=reply.draft, applied=True, empty=reply.yaml is None, stored=reply.saved)
            if reply.valid is False and reply.errors:  # the assistant gave up: its draft was never kept
                status += "\n\nThe assistant's last attempt was not valid, so it was not kept:\n" + "\n".join(
                    f"- {error}" for error in reply.errors
                )
            updates[self.status] = status
            updates[self.editor] = reply.yaml or ""
        if reply.diff is None:  # this turn changed nothing: keep showing the edit that made the current version
            current = engine.history.current(session_id)
            updates[self.diff] = current.diff if current else ""
        else:
            updates[self.diff] = reply.diff
        actions = [action for action in reply.actions if action != "/run"][:MAX_ACTIONS]
        for index, button in enumerate(self.actions):
            label = actions[index] if index < len(actions) else ""
            updates[button] = gr.update(value=label, visible=bool(label))
        updates.update(self._form(engine, reply.yaml, form_key))
        if reply.run_ids:
            updates[self.run_status] = run_line(engine, reply.run_ids[-1])
        elif from_form:
            updates[self.run_status] = "✗ **Not run** — " + reply.text
        updates[self.review] = gr.update(value=review_text(reply.review), visible=bool(reply.review))
        updates[self.grant] = gr.update(visible=bool(reply.review))
        return updates

    def _form(self, engine: ConversationEngine, source: str | None, form_key: str) -> Updates:
        inputs = list(workflow_inputs(engine, source).items())
        key = "|".join(name for name, _ in inputs) if source else ""
        updates: Updates = {self.form_key: key}
        for index, box in enumerate(self.fields):
            if index >= len(inputs):
                updates[box] = gr.update(visible=False, value="")
                continue
            name, spec = inputs[index]
            hints = [spec.description or ""]
            if spec.enum:
                hints.append("one of " + ", ".join(map(str, spec.enum)))
            if spec.default is not None:
                # Arrays and objects are typed as JSON, so their defaults are shown as JSON too.
                default = spec.default if isinstance(spec.default, str) else json.dumps(spec.default)
                hints.append(f"default: {default}")
            elif spec.is_required:
                hints.append("required")
            change: dict[str, Any] = {
                "visible": True,
                "label": f"{name} ({spec.type})",
                "placeholder": " · ".join(hint for hint in hints if hint),
            }
            if key != form_key:  # a different set of inputs: clear what was typed for the old ones
                change["value"] = ""
            updates[box] = gr.update(**change)
        if len(inputs) > len(self.fields):
            updates[self.run_status] = f"This workflow has {len(inputs)} inputs; pass the others with `/run k=v`."
        return updates

    # -- event handlers --------------------------------------------------------------------------

    def load(self, session_id: str | None, form_key: str, request: gr.Request | None = None) -> Updates:
        """Rebuild this browser's conversation and workflow from the store."""
        session_id = session_id or uuid.uuid4().hex
        self.remember_page(request, session_id)
        engine = engine_of(self.state)
        history = [{"role": m.role, "content": m.content} for m in engine.history.messages(session_id)]
        reply = engine.snapshot(session_id)
        return {
            self.chatbot: history,
            **self.show(engine, session_id, reply, form_key),
            self.message: gr.update(interactive=True),
            self.send: gr.update(interactive=True),
        }

    async def turn(
        self,
        text: str,
        history: list[dict[str, Any]] | None,
        session_id: str | None,
        form_key: str,
        request: gr.Request | None = None,
        *,
        from_form: bool = False,
    ) -> AsyncIterator[Updates]:
        """One chat turn, streamed: the question at once, then the steps, then the reply and the panel."""
        text = message_text(text).strip()
        if not text:
            yield {}
            return
        session_id = session_id or uuid.uuid4().hex
        self.remember_page(request, session_id)
        engine = await asyncio.to_thread(engine_of, self.state)
        messages = [*chat_messages(history), {"role": "user", "content": text}, {"role": "assistant", "content": "…"}]
        yield {self.chatbot: messages, self.session: session_id}
        try:
            async for item in engine.stream(session_id, text, channel="web", person=person_of(request)):
                if isinstance(item, Progress):
                    messages[-1] = {"role": "assistant", "content": f"⏳ _{item.text}_"}
                    yield {self.chatbot: messages}
                else:
                    messages[-1] = {"role": "assistant", "content": item.text}
                    shown = self.show(engine, session_id, item, form_key, from_form=from_form)
                    yield {self.chatbot: messages, **shown}
        except Exception as exc:  # a bug, not the model: the model's failures come back as a reply
            log.exception("chat turn failed")
            messages[-1] = {"role": "assistant", "content": f"Something went wrong on the server: {exc}"}
            yield {self.chatbot: messages}

    async def submit(
        self,
        text: str,
        history: list[dict[str, Any]] | None,
        session_id: str | None,
        form_key: str,
        request: gr.Request,
    ) -> AsyncIterator[Updates]:
        first = True
        async for update in self.turn(text, history, session_id, form_key, request):
            if first:
                update = {**update, self.message: ""}
                first = False
            yield update

    async def action(
        self,
        text: str,
        history: list[dict[str, Any]] | None,
        session_id: str | None,
        form_key: str,
        request: gr.Request,
    ) -> AsyncIterator[Updates]:
        """A suggested action's button: its label is the command."""
        async for update in self.turn(text, history, session_id, form_key, request):
            yield update

    async def grant_current(
        self, history: list[dict[str, Any]] | None, session_id: str | None, form_key: str, request: gr.Request
    ) -> AsyncIterator[Updates]:
        """The Grant button: the person grants what the current draft needs, as `/grant` in the conversation."""
        async for update in self.turn("/grant", history, session_id, form_key, request):
            yield update

    async def run_form(
        self,
        history: list[dict[str, Any]] | None,
        session_id: str | None,
        form_key: str,
        request: gr.Request,
        *values: str,
    ) -> AsyncIterator[Updates]:
        """Run the current workflow with the form's values, as `/run k=v …` in the conversation."""
        engine = await asyncio.to_thread(engine_of, self.state)
        current = engine.history.current(session_id) if session_id else None
        names = list(workflow_inputs(engine, current.source if current else None))
        pairs = [f"{name}={value}" for name, value in zip(names, values, strict=False) if (value or "").strip()]
        command = " ".join(["/run", *(shlex.quote(pair) for pair in pairs)])
        async for update in self.turn(command, history, session_id, form_key, request, from_form=True):
            yield update

    def remember_page(self, request: gr.Request | None, session_id: str) -> None:
        page = getattr(request, "session_hash", None) if request is not None else None
        if page:
            self.pages.pop(page, None)
            self.pages[page] = session_id
            while len(self.pages) > MAX_PAGES:
                self.pages.pop(next(iter(self.pages)))

    def check(self, session_id: str | None, source: str, stamp: str = "", request: gr.Request | None = None) -> Any:
        """Live validation while typing; nothing is saved. A check older than the last save changes nothing."""
        if not session_id and request is not None:
            session_id = self.pages.get(getattr(request, "session_hash", None) or "")
        if session_id and _moment(stamp) < self.saved_at.get(session_id, 0.0):
            log.debug("check %s of session %s: older than the last save, dropped", stamp, session_id)
            return gr.skip()
        status = self.check_status(session_id, source)
        log.debug("check %s of session %s (%d characters): %s", stamp, session_id, len(source), status.split("\n")[0])
        return status

    def check_status(self, session_id: str | None, source: str) -> str:
        engine = engine_of(self.state)
        current = engine.history.current(session_id) if session_id else None
        if not source.strip():
            if current is None:
                return status_line([], draft=None, applied=False, empty=True)
            return f"✗ **Empty** — nothing to apply; reload the page to get draft {current.number} back"
        normalized = source if source.endswith("\n") else source + "\n"
        applied = current is not None and current.source == normalized
        stored = Workspace(engine.flow, engine.history, session_id).stored() if applied and session_id else None
        return status_line(
            engine.check(source),
            draft=current.number if current else None,
            applied=applied,
            stored=VersionRef.of(stored) if stored is not None else None,
        )

    def apply_edit(
        self, session_id: str | None, source: str, form_key: str, stamp: str, request: gr.Request
    ) -> Updates:
        """Apply the editor's YAML as a new draft, or show its errors (the text stays for fixing)."""
        session_id = session_id or self.pages.get(getattr(request, "session_hash", None) or "") or uuid.uuid4().hex
        self.remember_page(request, session_id)
        self.saved_at[session_id] = max(self.saved_at.get(session_id, 0.0), _moment(stamp))
        engine = engine_of(self.state)
        reply = engine.apply_edit(session_id, source, person=person_of(request))
        log.debug("apply %s of session %s (%d characters): %s", stamp, session_id, len(source), reply.text)
        updates = self.show(engine, session_id, reply, form_key, edited=True)
        if reply.valid is False:
            del updates[self.diff]  # the last saved edit is still the last edit
        return updates


MAX_PAGES = 10_000


def _moment(stamp: str) -> float:
    try:
        return float(stamp)
    except ValueError:
        return 0.0


def person_of(request: gr.Request | None) -> str:
    """Who clicked: the login name when auth is on; this machine's only user otherwise."""
    username = getattr(request, "username", None) if request is not None else None
    return f"web:{username or 'local'}"


def review_text(missing: list[str]) -> str:
    if not missing:
        return ""
    lines = "\n".join(f"- {line}" for line in missing)
    return (
        "⚠ **Needs your grant before it can run.** This draft may use, beyond what was granted:\n"
        f"{lines}\n\nCheck the diff, then **Grant** (or type `/grant`)."
    )


# Apply must save what the editor holds *now*: read CodeMirror's document in the browser at the click,
# rather than the component value, which lags keystrokes typed just before the click. Checks and saves
# carry the moment they were triggered, so the server drops a check older than the last save.
# CodeMirror 6 hangs its EditorView on the content element (`cmTile` since 6.38, `cmView` before).
_EDITOR_DOC = """(fallback) => {
  const content = document.querySelector('#yaml-editor .cm-content');
  const owner = content && (content.cmTile || content.cmView);
  const view = owner && owner.view;
  return view && view.state ? view.state.doc.toString() : fallback;
}"""
EDITOR_TEXT_JS = f"(session, source, key, stamp) => [session, ({_EDITOR_DOC})(source), key, String(Date.now())]"
CHECK_TEXT_JS = f"(session, source, stamp) => [session, ({_EDITOR_DOC})(source), String(Date.now())]"


def build(state: AppState, session: gr.BrowserState) -> ChatTab:
    """Lay out the Chat tab (inside a `gr.Tab`) and wire its events."""
    notice = gr.Markdown(visible=False, elem_id="chat-notice")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            chatbot = gr.Chatbot(
                label="Conversation", height=560, placeholder=PLACEHOLDER, elem_id="chatbot", feedback_options=None
            )
            with gr.Row():
                # Both stay disabled until the page's conversation is loaded: a message sent before that would
                # be answered, then overwritten by the load's older view of the conversation.
                message = gr.Textbox(
                    show_label=False,
                    placeholder="Message the assistant, or /help",
                    scale=6,
                    autofocus=True,
                    elem_id="chat-input",
                    interactive=False,
                )
                send = gr.Button(
                    "Send", variant="primary", scale=1, min_width=80, elem_id="chat-send", interactive=False
                )
            with gr.Row():
                actions = [
                    gr.Button(visible=False, size="sm", variant="secondary", elem_classes=["chat-action"])
                    for _ in range(MAX_ACTIONS)
                ]
        with gr.Column(scale=5):
            status = gr.Markdown(status_line([], draft=None, applied=False, empty=True), elem_id="validation-status")
            editor = gr.Code(
                language="yaml",
                interactive=True,
                lines=18,
                max_lines=30,
                label="Workflow (YAML)",
                elem_id="yaml-editor",
            )
            apply = gr.Button("Apply edit", elem_id="apply-edit")
            stamp = gr.Textbox(visible=False)
            with gr.Group(visible=True):
                review = gr.Markdown(visible=False, elem_id="grant-review")
                grant = gr.Button("Grant", variant="stop", visible=False, elem_id="grant-button")
            with gr.Accordion("Run", open=True):
                fields = [gr.Textbox(visible=False, elem_classes=["run-input"]) for _ in range(MAX_INPUTS)]
                form_key = gr.State("")
                run = gr.Button("Run", variant="primary", elem_id="run-button")
                run_status = gr.Markdown(elem_id="run-status")
            with gr.Accordion("Last edit (diff)", open=False):
                diff = gr.Code(language=None, interactive=False, lines=8, show_label=False, elem_id="edit-diff")
    tab = ChatTab(
        state,
        session,
        notice,
        chatbot,
        message,
        send,
        actions,
        status,
        editor,
        apply,
        fields,
        form_key,
        run,
        run_status,
        diff,
        review,
        grant,
        stamp,
    )
    wire(tab)
    return tab


def wire(tab: ChatTab) -> None:
    # Every chat event may run for as long as the model thinks: no per-event queue (the default of 1
    # would make each person wait for everyone else's turn).
    unlimited: dict[str, Any] = {"concurrency_limit": None}
    turn_inputs = [tab.chatbot, tab.session, tab.form_key]
    for trigger in (tab.message.submit, tab.send.click):
        trigger(
            tab.submit,
            inputs=[tab.message, *turn_inputs],
            outputs=tab.outputs,
            api_visibility="private",
            show_progress="hidden",
            **unlimited,
        )
    # Turns show their progress in the conversation itself; an overlay on every output would only cost
    # the browser a timer per component.
    quiet: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden", **unlimited}
    for button in tab.actions:
        button.click(tab.action, inputs=[button, *turn_inputs], outputs=tab.outputs, **quiet)
    tab.grant.click(tab.grant_current, inputs=turn_inputs, outputs=tab.outputs, **quiet)
    tab.run.click(tab.run_form, inputs=[*turn_inputs, *tab.fields], outputs=tab.outputs, **quiet)
    # A stale "not saved yet" must never overwrite a save's status: each check and save carries when it
    # was triggered (the browser's clock), and the server drops a check older than the last save. Apply
    # reads CodeMirror's document itself, so it saves the text typed last. No progress overlays: they
    # animate a timer per output, which a busy browser pays for on every keystroke. Checks and saves share
    # one FIFO lane, so a check sent before a save also finishes before it.
    editor_lane: dict[str, Any] = {"concurrency_id": "editor", "concurrency_limit": 1}
    tab.editor.input(
        tab.check,
        inputs=[tab.session, tab.editor, tab.stamp],
        js=CHECK_TEXT_JS,
        outputs=tab.status,
        trigger_mode="always_last",
        show_progress="hidden",
        api_visibility="private",
        **editor_lane,
    )
    tab.apply.click(
        tab.apply_edit,
        inputs=[tab.session, tab.editor, tab.form_key, tab.stamp],
        outputs=tab.outputs,
        js=EDITOR_TEXT_JS,
        # A click's default mode ("once") drops a click while an earlier Apply's request is still open in
        # the browser: the save would silently not happen. Every click is a save.
        trigger_mode="multiple",
        show_progress="hidden",  # validation and one commit: milliseconds, nothing to watch
        api_visibility="private",
        **editor_lane,
    )

    async def chat(message: str, session_id: str = "") -> tuple[str, dict[str, Any]]:
        """One chat turn: the assistant's reply text, then the reply's details (yaml, valid, errors, draft, saved,
        run_ids, actions; `version` is the draft too) and the session_id to pass on to continue the conversation."""
        engine = await asyncio.to_thread(engine_of, tab.state)
        session = session_id.strip() or uuid.uuid4().hex
        reply = await engine.handle(session, message_text(message), channel="web")
        return reply.text, {"session_id": session, **reply.to_dict()}

    gr.api(chat, api_name="chat", **unlimited)

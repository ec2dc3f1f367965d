"""`agentflow agent serve WORKFLOW`: one workflow as an A2A agent, in a process of its own (agentflow/a2a/serve.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


class AgentUsageError(Exception):
    """A command line that cannot start an agent; the message says what to change."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = commands.add_parser("agent", help="run one workflow as a minimal A2A agent process")
    sub = agent.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve a workflow over A2A (no UI, no MLflow server); optionally register with an orchestrator",
    )
    serve.add_argument("workflow", metavar="WORKFLOW_FILE_OR_NAME", help="a workflow file, or a stored workflow's name")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8700, help="port (default 8700; 0 picks a free one)")
    serve.add_argument("--home", type=Path, help="the agent's data directory (default AGENTFLOW_HOME or ./data)")
    serve.add_argument("--register", metavar="ORCHESTRATOR_URL", help="enrol with this AgentFlow's agent registry")
    serve.add_argument("--token", help="the enrolment token for --register (from `agentflow agents token`)")
    serve.add_argument("--public-url", help="how others reach this agent, when not at http://HOST:PORT")
    serve.add_argument("--check-imports", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from agentflow.a2a.serve import AgentOptions, AgentServeError, serve_agent
    from agentflow.registry.client import EnrolmentError
    from agentflow.settings import SettingsError
    from agentflow.spec.errors import SpecErrors

    options = AgentOptions(
        workflow=args.workflow,
        host=args.host,
        port=args.port,
        home=args.home,
        register=args.register,
        token=args.token,
        public_url=args.public_url,
    )
    try:
        return asyncio.run(serve_agent(options, check_imports=args.check_imports))
    except (AgentServeError, EnrolmentError, SettingsError, SpecErrors) as exc:
        raise AgentUsageError(str(exc)) from None

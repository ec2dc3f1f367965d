"""The live agent registry: A2A agents that enrolled themselves or were added by URL, and their health.

`Registry` (service.py) is what the running AgentFlow holds as `services.registry`; `Agent` and `Skill`
(models.py) are what it hands out; states follow from timestamps (health.py); cards are fetched through
the egress guard (cards.py); `client.Enrolment` is the agent process's side. See docs/agents.md.
"""

from agentflow.registry.models import Agent, Skill
from agentflow.registry.service import EnrolmentRefused, NotThisAgent, Registry, RegistryError, UnknownAgent

__all__ = ["Agent", "EnrolmentRefused", "NotThisAgent", "Registry", "RegistryError", "Skill", "UnknownAgent"]

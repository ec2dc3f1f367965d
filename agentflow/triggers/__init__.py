"""What starts runs from the world: deployments, signed webhooks, schedules, and the dispatch of
chat messages (agentflow/channels/) to workflows. Triggers fire only the *deployed* version of a
workflow; every delivery is logged (accepted, duplicate, refused with why). See docs/triggers.md.
"""

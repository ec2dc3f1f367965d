"""AgentFlow over A2A: deployed workflows served as agents (`routes`), remote agents called (`client`)."""

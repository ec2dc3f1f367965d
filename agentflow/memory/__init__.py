"""Memory that persists across runs: items in scopes, keyword and vector search (see docs/memory.md)."""

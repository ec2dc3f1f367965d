"""The conversation engine: chat turns in, workflow edits and runs out. Knows no UI."""

"""Prompts kept in MLflow's prompt registry: references (`prompts:/NAME@ALIAS`), loading, pushing."""

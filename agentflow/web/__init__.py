"""The web server: REST API, auth, and the Gradio UI mounted in one FastAPI app."""

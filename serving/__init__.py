"""Serving: the guarded chat model on Ray Serve with an OpenAI-compatible HTTP API."""

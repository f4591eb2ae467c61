"""Serving: an OpenAI-compatible HTTP server and a web UI on the engine (`lmstack serve`)."""

"""Serving base and tuned models over OpenAI's /v1/models and /v1/chat/completions, behind one engine interface."""

"""``uvicorn api.main:app``: the app built from the environment at import.

Tests and embedding code import :func:`api.app.create_app` instead, which reads nothing until
called. ``python -m api`` is the recommended way to serve (see ``api/server.py``)."""

from __future__ import annotations

from api.app import create_app
from api.logs import setup_logging
from api.settings import Settings

settings = Settings()
setup_logging(instance=settings.instance_id, level=settings.log_level, fmt=settings.log_format, tags=settings.log_tags)
app = create_app(settings)

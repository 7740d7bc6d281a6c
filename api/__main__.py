"""``python -m api``: serve with the settings' host/port, our graceful shutdown and frame limit."""

from __future__ import annotations

import sys

from loguru import logger

from api.app import create_app
from api.logs import setup_logging
from api.server import build_server
from api.settings import InsecureSettings, Settings


def main() -> None:
    settings = Settings()
    setup_logging(instance=settings.instance_id, level=settings.log_level, fmt=settings.log_format)
    try:
        app = create_app(settings)
    except InsecureSettings as exc:
        logger.error("refusing to start: {}", exc)
        sys.exit(2)
    server = build_server(
        app,
        settings,
        host=settings.host,
        port=settings.port,
        log_config=None,  # logging is ours (api/logs.py): loguru, JSON off a terminal
    )
    server.run()


if __name__ == "__main__":
    main()

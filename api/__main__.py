"""``python -m api``: serve with the settings' host/port and a frame-size limit for WebSockets."""

from __future__ import annotations

import uvicorn

from api.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        "api.main:app",
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_frame_bytes + 1024,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 10,
        proxy_headers=True,
        log_config=None,  # logging is ours (api/logs.py): loguru, JSON off a terminal
    )


if __name__ == "__main__":
    main()

"""``python -m api``: serve with the settings' host/port, our graceful shutdown and frame limit;
with ``WORKERS`` > 1, that many processes (``api/workers.py``)."""

from __future__ import annotations

import sys

from api.workers import load_settings, run_workers, serve


def main() -> None:
    settings = load_settings()
    if settings.workers > 1:
        sys.exit(run_workers(settings))
    serve(settings)


if __name__ == "__main__":
    main()

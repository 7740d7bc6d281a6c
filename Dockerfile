# syntax=docker/dockerfile:1
# Multi-stage: build wheels with the compiler, run on a slim image as a non-root user.

FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends gcc && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY api ./api
COPY streaming ./streaming
COPY reply ./reply
COPY llm ./llm
COPY persona ./persona
COPY deploy ./deploy
# Listed in pyproject's packages (the shared test/bench kit; never imported by the app), so it must be here to build.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
# Data the app reads at run time: brand files and the static widget/demo page.
COPY --chown=app:app brands ./brands
COPY --chown=app:app static ./static
ENV BRANDS_DIR=/app/brands \
    STATIC_DIR=/app/static
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"
# One uvicorn worker per container: scale with more containers (the streams live in Redis, so any
# container serves any client). `python -m api` sets the WebSocket frame limit, the graceful
# shutdown timeout and our logging; SIGTERM closes sockets with 1012 and drains running replies.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "api"]

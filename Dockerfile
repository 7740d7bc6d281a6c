# syntax=docker/dockerfile:1
# Multi-stage: install the locked dependencies into a venv, run it on the same base as a non-root user.
#
# The base is an argument so one file builds from the public image where a registry is reachable
# (the default) and from a locally bootstrapped Debian bookworm where none is (deploy/image/build.sh,
# docs/deploy.md "Building the image"). Any Debian-like base with Python 3.11 works; one without
# Python (e.g. debian:bookworm-slim) gets Debian's python3 (3.11 on bookworm).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# python:3.11-slim has python3 (with ensurepip) in /usr/local/bin; a bare Debian needs python3-venv.
RUN if ! python3 -c 'import ensurepip' 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first, pinned with hashes (requirements.lock, `make lock`): the layer is reused
# until the lock changes. Then the app itself, without resolving anything again.
# A build behind a TLS-intercepting proxy passes its CA bundle as the optional secret `pip_cert`
# (deploy/image/build.sh does); it is mounted for these two steps only, never stored in a layer.
COPY requirements.lock ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY streaming ./streaming
COPY reply ./reply
COPY llm ./llm
COPY persona ./persona
COPY deploy ./deploy
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && pip check

FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json
# The venv's python links to the base's own python3: a base without one gets Debian's here too.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 app
WORKDIR /app
# Data the app reads at run time: brand files and the static widget/demo page.
COPY --chown=app:app brands ./brands
COPY --chown=app:app static ./static
ENV BRANDS_DIR=/app/brands \
    STATIC_DIR=/app/static
USER app
EXPOSE 8000
# Podman keeps HEALTHCHECK only in Docker-format images: build with `--format docker` there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"
# One uvicorn worker per container: scale with more containers (the streams live in Redis, so any
# container serves any client). `python -m api` sets the WebSocket frame limit, the graceful
# shutdown timeout and our logging; SIGTERM closes sockets with 1012 and drains running replies.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "api"]

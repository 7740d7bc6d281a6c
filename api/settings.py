"""All configuration in one place: environment variables, safe offline defaults.

Every field maps to an upper-case environment variable of the same name (``HEARTBEAT_MS``,
``BUFFER_URL`` …). The README's configuration table lists them; keep the two in step.
"""

from __future__ import annotations

import importlib.metadata
import json
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from api.identity import parse_identity_secrets

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# SESSION_SECRET: at least this many bytes outside APP_ENV=dev (HMAC-SHA256 wants a 256-bit key).
MIN_SECRET_BYTES = 32
# Values that were published (docs, compose files, examples) and so sign nothing outside dev mode.
PUBLISHED_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-string",
        "change-me",
        "changeme",
        "secret",
        "test-secret-shared-by-instances",
        "eval-only",
    }
)


class InsecureSettings(ValueError):
    """The settings are not safe outside ``APP_ENV=dev``; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # --- server -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1, le=256)  # server processes (python -m api); > 1 needs Redis
    instance_id: str = Field(default_factory=lambda: "i-" + secrets.token_hex(3))
    app_env: str = "production"  # "dev" (make run, tests): random SESSION_SECRET allowed, brand dev keys work
    # NoDecode: comma-separated in the environment, not JSON (the validator below splits them).
    allowed_origins: Annotated[list[str], NoDecode] = ["*"]
    # Peers whose X-Forwarded-For names the client (addresses or CIDR networks; api/limits.py).
    trusted_proxies: Annotated[list[str], NoDecode] = []

    # --- upstream model --------------------------------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    llm_provider: str = "auto"  # auto | openai | offline
    # How the streamed reply is sent and read (llm/openai_provider.py): wire | lean | sdk.
    openai_stream_parser: Literal["wire", "lean", "sdk"] = "wire"
    max_reply_tokens: int = 512
    offline_token_delay_ms: int = 35

    # --- timeouts (seconds unless the name says ms) ----------------------------------------------
    upstream_connect_timeout_s: float = 5.0
    upstream_first_token_timeout_s: float = 20.0
    upstream_stall_timeout_s: float = 15.0
    upstream_total_deadline_s: float = 120.0
    upstream_retry_max_wait_s: float = 10.0
    heartbeat_ms: int = 15_000
    hello_timeout_s: float = 10.0
    send_timeout_s: float = 10.0
    shutdown_grace_s: float = 20.0

    # --- buffer / sessions ------------------------------------------------------------------
    buffer_url: str = "memory://"
    resume_window_s: int = 600
    conversation_ttl_s: int = 86_400
    session_secret: SecretStr = SecretStr("")
    # Per-brand keys of identify's user_hash (api/identity.py): "demo=<secret>,meridian=<secret>" or
    # JSON; a brand named twice has two keys while it rotates. Unset: no brand verifies users.
    identity_secrets: SecretStr = SecretStr("")
    token_ttl_s: int = 3600
    # No token is issued or accepted for a conversation first negotiated this long ago (refreshing
    # cannot extend it); unset: CONVERSATION_TTL_S.
    conversation_max_age_s: int | None = Field(default=None, ge=1)
    stream_max_events: int = 5_000
    stream_max_chars: int = 40_000
    follower_queue_max_events: int = 256  # live events queued per follower before it re-reads the log
    lease_ttl_s: float = 5.0  # a producer silent this long (dead, paused) is taken over by another instance
    buffer_outage_deadline_s: float = 10.0  # replies wait this long for an unreachable Redis, then end
    # Redis: writes start at most once per this many ms, each carrying every stream's new events (issue 10).
    redis_write_gather_ms: float = Field(default=2.0, ge=0, le=50)

    # --- input limits ----------------------------------------------------------------------
    max_message_chars: int = 4_000
    max_frame_bytes: int = 65_536
    outbox_max_frames: int = 512
    ws_max_bad_frames: int = 10
    ws_rate_per_s: float = 20.0
    ws_rate_burst: int = 40
    max_body_bytes: int = 262_144  # any HTTP request body, refused with 413 while it is read
    http_header_timeout_s: float = 10.0  # a request's headers must arrive whole within this
    http_body_timeout_s: float = 10.0  # longest wait for the next piece of a request body
    http_keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    http_max_concurrency: int = 4096  # connections + running requests before uvicorn answers 503
    history_max_turns: int = 200  # stored turns per conversation; then sends are refused (413)
    history_max_chars: int = 32_000  # of history text read into a prompt (newest turns first)

    # --- limits (api/limits.py; across instances through Redis when BUFFER_URL is redis://) ----
    rate_replies_per_min: int = 60  # replies started per client address per minute
    rate_negotiates_per_min: int = 60  # negotiates per client address per minute
    max_running_replies_per_brand: int = 200  # running replies per brand, all instances together
    max_running_replies: int = 100  # running replies on one instance
    max_connections_per_address: int = 100  # open WebSocket + SSE connections per client address

    # --- observability ---------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: str = "auto"  # auto (JSON unless on a terminal) | json | pretty
    dd_agent_host: str | None = None  # Datadog's own variable names
    dd_service: str = "brandchat"  # the `service` of every JSON log line (ddtrace reads DD_SERVICE too)
    dd_env: str | None = None  # the `env` of every JSON log line; unset: APP_ENV
    dd_version: str | None = None  # the `version` of every JSON log line; unset: the installed package's
    dd_dogstatsd_port: int = 8125
    metrics_enabled: bool | None = None  # None: on when DD_AGENT_HOST is set
    hooks: Annotated[list[str], NoDecode] = []  # "package.module:function" monitoring hooks loaded at start-up

    # --- brands --------------------------------------------------------------------------
    guard_enabled: bool = True  # false only to measure the guard's cost (make bench); never in production
    # Sentence reviews beside the stream (reply/review.py): a model's second opinion when a key is
    # set (a brand opts out with guard.review.enabled: false), sentence embeddings for brands with
    # guard.semantic.enabled (the `semantic` extra). Both fail open on timeout or error.
    guard_review_api_key: SecretStr | None = None
    guard_review_base_url: str | None = None  # unset: OPENAI_BASE_URL
    guard_review_model: str = "gpt-4o-mini"
    guard_review_timeout_s: float = Field(default=3.0, gt=0, le=60)
    guard_semantic_timeout_s: float = Field(default=2.0, gt=0, le=60)
    brands_dir: Path = PROJECT_ROOT / "brands"
    static_dir: Path = PROJECT_ROOT / "static"

    @field_validator("allowed_origins", "hooks", "trusted_proxies", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)  # a JSON list works too
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _identity_secrets_parse(self) -> Settings:
        parse_identity_secrets(self.identity_secrets.get_secret_value())  # malformed: refuse to start, any mode
        return self

    @model_validator(mode="after")
    def _workers_need_a_shared_buffer(self) -> Settings:
        if self.workers > 1 and self.buffer_url.split(":", 1)[0].lower() == "memory":
            raise ValueError(
                f"WORKERS={self.workers} needs a shared buffer (BUFFER_URL=redis://…): the memory buffer "
                "lives in one process, so streams, resumes and cancels would not reach the other workers. "
                "Use WORKERS=1 with the memory buffer."
            )
        return self

    @property
    def log_tags(self) -> dict[str, str]:
        """Datadog's unified service tags, on every JSON log line (``api/logs.py``)."""
        return {
            "service": self.dd_service,
            "env": self.dd_env or self.app_env,
            "version": self.dd_version or package_version(),
        }

    @property
    def max_conversation_age_s(self) -> int:
        return self.conversation_max_age_s or self.conversation_ttl_s

    @property
    def dev_mode(self) -> bool:
        return self.app_env.strip().lower() == "dev"

    @cached_property
    def secret_bytes(self) -> bytes:
        """The token-signing key. Unset (dev mode only, see :meth:`check_secrets`) means a random
        per-process key: fine for one instance, wrong for several, hence the start-up warning."""
        return (self.session_secret.get_secret_value() or _PROCESS_SECRET).encode()

    @cached_property
    def identity_keys(self) -> dict[str, tuple[bytes, ...]]:
        """Brand id → the keys its users' ``user_hash`` may be signed with (``IDENTITY_SECRETS``)."""
        return parse_identity_secrets(self.identity_secrets.get_secret_value())

    def check_secrets(self) -> None:
        """Fail closed: outside ``APP_ENV=dev`` a missing, short or published ``SESSION_SECRET``
        stops start-up (anyone who knows the key can forge a token for any conversation), and so does
        a short or published identity secret (anyone who knows it can sign in as any user)."""
        if self.dev_mode:
            return
        secret = self.session_secret.get_secret_value()
        hint = "set it to 32+ random bytes: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        if not secret:
            raise InsecureSettings(f"SESSION_SECRET is not set (APP_ENV={self.app_env}): {hint}")
        if secret.strip().lower() in PUBLISHED_SECRETS:
            raise InsecureSettings(f"SESSION_SECRET is a published placeholder: {hint}")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise InsecureSettings(f"SESSION_SECRET is shorter than {MIN_SECRET_BYTES} bytes: {hint}")
        for brand, keys in self.identity_keys.items():
            for key in keys:
                if key.decode().strip().lower() in PUBLISHED_SECRETS:
                    raise InsecureSettings(f"IDENTITY_SECRETS: brand {brand!r} has a published placeholder secret")
                if len(key) < MIN_SECRET_BYTES:
                    raise InsecureSettings(
                        f"IDENTITY_SECRETS: the secret of brand {brand!r} is shorter than {MIN_SECRET_BYTES} bytes"
                    )

    @property
    def metrics_on(self) -> bool:
        return self.metrics_enabled if self.metrics_enabled is not None else bool(self.dd_agent_host)

    @property
    def review_key(self) -> str | None:
        """The second opinion's key: set means sentence reviews by ``GUARD_REVIEW_MODEL`` are on."""
        key = self.guard_review_api_key.get_secret_value() if self.guard_review_api_key else ""
        return key or None

    @property
    def provider_name(self) -> str:
        if self.llm_provider != "auto":
            return self.llm_provider
        return "openai" if self.openai_api_key and self.openai_api_key.get_secret_value() else "offline"


_PROCESS_SECRET = secrets.token_urlsafe(32)


def package_version() -> str:
    try:
        return importlib.metadata.version("brandchat")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"

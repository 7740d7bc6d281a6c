"""All configuration in one place: environment variables, safe offline defaults.

Every field maps to an upper-case environment variable of the same name (``HEARTBEAT_MS``,
``BUFFER_URL`` …). The README's configuration table lists them; keep the two in step.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # --- server -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1, le=256)  # server processes (python -m api); > 1 needs Redis
    instance_id: str = Field(default_factory=lambda: "i-" + secrets.token_hex(3))
    allowed_origins: list[str] = ["*"]

    # --- upstream model --------------------------------------------------------------------
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    llm_provider: str = "auto"  # auto | openai | offline
    openai_stream_parser: Literal["lean", "sdk"] = "lean"  # how the streamed reply is read (llm/openai_provider.py)
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
    session_secret: str = ""
    token_ttl_s: int = 3600
    stream_max_events: int = 5_000
    stream_max_chars: int = 40_000
    follower_queue_max_events: int = 256  # live events queued per follower before it re-reads the log
    lease_ttl_s: float = 5.0  # a producer silent this long (dead, paused) is taken over by another instance
    buffer_outage_deadline_s: float = 10.0  # replies wait this long for an unreachable Redis, then end

    # --- input limits ----------------------------------------------------------------------
    max_message_chars: int = 4_000
    max_frame_bytes: int = 65_536
    outbox_max_frames: int = 512
    ws_max_bad_frames: int = 10
    ws_rate_per_s: float = 20.0
    ws_rate_burst: int = 40

    # --- observability ---------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: str = "auto"  # auto (JSON unless on a terminal) | json | pretty
    dd_agent_host: str | None = None  # Datadog's own variable names
    dd_dogstatsd_port: int = 8125
    metrics_enabled: bool | None = None  # None: on when DD_AGENT_HOST is set
    hooks: list[str] = []  # "package.module:function" monitoring hooks loaded at start-up

    # --- brands --------------------------------------------------------------------------
    guard_enabled: bool = True  # false only to measure the guard's cost (make bench); never in production
    brands_dir: Path = PROJECT_ROOT / "brands"
    static_dir: Path = PROJECT_ROOT / "static"

    @field_validator("allowed_origins", "hooks", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _workers_need_a_shared_buffer(self) -> Settings:
        if self.workers > 1 and self.buffer_url.split(":", 1)[0].lower() == "memory":
            raise ValueError(
                f"WORKERS={self.workers} needs a shared buffer (BUFFER_URL=redis://…): the memory buffer "
                "lives in one process, so streams, resumes and cancels would not reach the other workers. "
                "Use WORKERS=1 with the memory buffer."
            )
        return self

    @cached_property
    def secret_bytes(self) -> bytes:
        """The token-signing key. Unset means a random per-process key: fine for one instance,
        wrong for several (tokens would not verify across instances), hence the start-up warning."""
        return (self.session_secret or _PROCESS_SECRET).encode()

    @property
    def metrics_on(self) -> bool:
        return self.metrics_enabled if self.metrics_enabled is not None else bool(self.dd_agent_host)

    @property
    def provider_name(self) -> str:
        if self.llm_provider != "auto":
            return self.llm_provider
        return "openai" if self.openai_api_key else "offline"


_PROCESS_SECRET = secrets.token_urlsafe(32)

"""The one settings object: `FEEDBACKLOOP_*` environment variables over an optional YAML file.

Precedence (highest first): explicit keyword arguments, environment variables, the file named
by `FEEDBACKLOOP_CONFIG_FILE`, then the defaults below. Every field is documented in the
README's configuration table; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from feedbackloop.names import check_project_id
from feedbackloop.roles import Role

ENV_PREFIX = "FEEDBACKLOOP_"
CONFIG_FILE_ENV = ENV_PREFIX + "CONFIG_FILE"


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads settings from the YAML file named by FEEDBACKLOOP_CONFIG_FILE, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config file must hold a mapping of setting names to values")
        unknown = sorted(set(data) - set(self.settings_cls.model_fields))
        if unknown:
            raise ValueError(f"{path}: unknown settings: {', '.join(unknown)}")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- server ---
    role: Role = Field(
        "all",
        description="What this process runs: all (the gRPC services and the pipeline), api (the services) or worker (the pipeline).",
    )
    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    data_dir: Path = Field(
        Path("data"), description="Directory for the embedded SQLite and Milvus Lite files."
    )
    max_message_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest gRPC message accepted.")
    server_workers: int = Field(16, gt=0, description="Threads serving RPCs.")
    max_connection_age_seconds: float = Field(
        300.0,
        ge=0,
        description="Age after which the server asks a client to reconnect (GOAWAY), so clients re-resolve and rebalance (0: never).",
    )
    max_connection_age_grace_seconds: float = Field(
        300.0,
        ge=0,
        description="How long calls in flight on a connection past its age may finish before it is closed.",
    )
    shutdown_grace_seconds: float = Field(
        5.0,
        ge=0,
        description="On SIGTERM/SIGINT, how long in-flight RPCs and pipeline batches may finish before they are cancelled.",
    )

    # --- store ---
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/feedbackloop.db."
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite fsync policy: NORMAL survives a killed process, FULL also a power loss (slower).",
    )
    sqlite_analyze_interval_seconds: float = Field(
        60.0,
        ge=0,
        description="How often the server refreshes SQLite's query-planner statistics (0: never).",
    )
    auto_migrate: bool = Field(
        True,
        description="`serve` upgrades the schema to the latest migration at start; when false it refuses a schema "
        "older than the code, an empty database included.",
    )

    # --- auth & tenancy ---
    default_project: str = Field("default", description="Project served without a key on loopback.")
    allow_anonymous_loopback: bool = Field(
        True,
        description="On a loopback bind, requests without a key act as the default project with every scope.",
    )

    # --- validation limits ---
    max_text_chars: int = Field(
        32_000, gt=0, description="Longest text field (prompt, response, comment...)."
    )
    max_attributes: int = Field(64, gt=0, description="Most free attributes on one record.")
    max_future_skew_seconds: int = Field(300, ge=0, description="How far in the future a timestamp may lie.")
    default_page_size: int = Field(50, gt=0, description="Page size when a list request sets none.")
    max_page_size: int = Field(500, gt=0, description="Largest page a list request may ask for.")
    stream_batch_size: int = Field(
        256,
        gt=0,
        description="Most events per transaction: per SubmitFeedbackStream batch and per unary group commit.",
    )

    # --- pipeline ---
    pipeline_enabled: bool = Field(True, description="Run the embedding/routing pipeline inside `serve`.")
    pipeline_poll_seconds: float = Field(0.2, gt=0, description="Idle wait between polls for new jobs.")
    schema_refresh_seconds: float = Field(
        5.0,
        gt=0,
        description="How stale ingestion's copy of a project's applied FeedbackSchema may get before it re-reads it.",
    )
    pipeline_max_attempts: int = Field(8, gt=0, description="Attempts before a job goes to the dead letter.")
    pipeline_backoff_seconds: float = Field(1.0, gt=0, description="First retry delay; doubles per attempt.")
    pipeline_backoff_max_seconds: float = Field(300.0, gt=0, description="Longest retry delay.")
    pipeline_lease_seconds: float = Field(60.0, gt=0, description="How long a claimed job stays claimed.")

    # --- recall ---
    milvus_uri: str | None = Field(
        None, description="Milvus URI; default a Milvus Lite file <data_dir>/milvus.db."
    )
    milvus_token: str | None = Field(None, description="Milvus token (user:password or API key).")
    milvus_db_name: str | None = Field(None, description="Milvus database name.")
    milvus_collection: str = Field("feedback", description="Milvus collection holding feedback vectors.")
    milvus_lite_live_row_cache: bool = Field(
        True, description="Milvus Lite: keep each segment set's live rows between searches."
    )
    index_check_interval_seconds: float = Field(
        300.0,
        ge=0,
        description="How often the server compares each project's vectors with its stored feedback (0: never).",
    )
    recall_clustering_concurrency: int = Field(
        2,
        gt=0,
        description="TopIssues and GetTrends-by-issue calls this process clusters at once; one past them waits, then gets RESOURCE_EXHAUSTED.",
    )
    recall_clustering_wait_seconds: float = Field(
        2.0,
        ge=0,
        description="How long a clustering call waits for a free slot before RESOURCE_EXHAUSTED (0: not at all).",
    )
    recall_clustering_max_feedback: int = Field(
        250_000,
        gt=0,
        description="Most complaints a window (and the one before it) may hold for TopIssues or GetTrends by issue to cluster it; more is INVALID_ARGUMENT.",
    )
    embedding_model: str | None = Field(
        None, description="sentence-transformers model name or path; default the bundled all-MiniLM-L6-v2."
    )
    embedding_device: str = Field("cpu", description="Device for the embedding model (cpu, cuda).")
    embedding_batch_size: int = Field(64, gt=0, description="Feedback embedded per model call.")
    embedding_batch_max_wait_ms: int = Field(200, ge=0, description="Longest wait to fill a batch.")

    # --- OTLP in ---
    span_link_wait_seconds: float = Field(
        300.0,
        ge=0,
        description="How long feedback naming a span not received yet waits for it (0: refused at once with NOT_FOUND).",
    )
    span_link_expiry: Literal["keep", "refuse"] = Field(
        "keep",
        description="Feedback whose span did not arrive in time: keep (routed unlinked) or refuse (not routed; dead letter).",
    )

    # --- metrics ---
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus `/metrics` endpoint, on the gRPC bind address (0: no endpoint).",
    )
    metrics_project_label: bool = Field(
        False,
        description="Label the feedback, pipeline and routing metrics with the project (a series per project: for few projects).",
    )
    metrics_max_versions: int = Field(
        20,
        gt=0,
        description="Distinct model versions per project, and prompt versions per prompt, kept as label values; later ones count as `other`.",
    )
    metrics_refresh_seconds: float = Field(
        15.0,
        ge=0,
        description="Most often the store-wide gauges (pipeline queue, review queues, patches) are re-read; a scrape in between sees the last reading.",
    )

    # --- web console ---
    console: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Serve the web console beside the gRPC API: auto (only when the gRPC server binds a loopback address), on, off.",
    )
    console_port: int = Field(
        50080,
        ge=0,
        le=65535,
        description="HTTP port of the web console, on the gRPC bind address (0 picks a free one).",
    )
    console_secure_cookies: bool = Field(
        False,
        description="Mark the web console's cookies Secure: set it when browsers reach the console over HTTPS (a TLS proxy or Ingress in front of it).",
    )
    console_cors_origins: str = Field(
        "",
        description="Comma-separated origins (`https://shop.example`) whose pages may call the console's JSON endpoint with a key or a feedback token; empty: none.",
    )

    # --- routing ---
    policies_dir: Path | None = Field(
        Path("policies"), description="Policy set `serve` applies on first start when none is live."
    )

    @field_validator("database_url", "milvus_uri", "milvus_token", "milvus_db_name", "embedding_model")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("console_cors_origins")
    @classmethod
    def _valid_origins(cls, value: str) -> str:
        cors_origins_of(value)
        return value

    @field_validator("default_project")
    @classmethod
    def _valid_project(cls, value: str) -> str:
        return check_project_id(value)

    @field_validator("policies_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        # FEEDBACKLOOP_POLICIES_DIR= (empty) means "no policy set", not the working directory.
        return None if value == "" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlFileSource(settings_cls)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'feedbackloop.db'}"

    @property
    def effective_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def binds_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def console_cors_origin_list(self) -> tuple[str, ...]:
        return cors_origins_of(self.console_cors_origins)

    @property
    def console_enabled(self) -> bool:
        # Off by default on a non-loopback bind: the console is a way in, opened on purpose.
        return self.console == "on" or (self.console == "auto" and self.binds_loopback)


def cors_origins_of(value: str) -> tuple[str, ...]:
    """The origins of a comma-separated list, each checked (`check_origin`)."""
    origins = tuple(part.strip() for part in value.split(",") if part.strip())
    for origin in origins:
        check_origin(origin)
    return origins


def check_origin(origin: str) -> None:
    """An origin as a browser sends it: scheme, host and port only; ValueError otherwise.

    `*` is refused: the endpoint's callers hold keys and tokens meant for their own pages, so
    each origin is opened by name.
    """
    parsed = urlsplit(origin)
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.path
        or parsed.query
        or parsed.fragment
        or parsed.username
    ):
        raise ValueError(f"{origin!r} is not an origin like https://shop.example or http://localhost:3000")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

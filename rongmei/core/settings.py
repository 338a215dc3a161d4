"""Configuration: `rongmei.toml` (or the file named by RONGMEI_CONFIG), overridden by RONGMEI_* variables.

Nested values use a double underscore in the environment, e.g. RONGMEI_MEDIA__MAX_DURATION_S; so do the keys
of a channel's own `[<name>]` section, which the channel declares and validates (`Settings.channel_section`).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rongmei.core.media_settings import MediaSettings
from rongmei.core.model import Kind

__all__ = [
    "DEFAULT_STAGES", "FeedSourceConfig", "Lexicon", "ReviewStage", "ScreenGroup", "SectionEnvSource",
    "Settings", "Zone", "load_settings"
]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rongmei"


class ReviewStage(BaseModel):
    name: str = Field(description="Stage key used in tags and the ledger, e.g. 'first'.")
    label: str = Field(description="What editors call the stage, e.g. 初审.")
    role: str = Field(description="Role a reviewer must hold to sign this stage.")


DEFAULT_STAGES = [
    ReviewStage(name="first", label="初审", role="editor"),
    ReviewStage(name="second", label="复审", role="desk_head"),
    ReviewStage(name="final", label="终审", role="chief_editor"),
]


class Zone(BaseModel):
    code: str = Field(description="Administrative code (GB/T 2260 style, 9 or 12 digits for villages).")
    name: str = Field(description="Township (苏木镇街道) or village (嘎查村社区) name.")
    parent: str | None = Field(default=None, description="Code of the township a village belongs to.")


class ScreenGroup(BaseModel):
    id: str = Field(description="Display group id used in URLs and front matter.")
    name: str = Field(description="Where the screens are, e.g. 政务服务大厅.")
    size: tuple[int, int] = Field(default=(1920, 1080), description="Design size in pixels.")


class Lexicon(BaseModel):
    forbidden: list[str] = Field(default_factory=list, description="Terms that block publication.")
    sensitive: list[str] = Field(default_factory=list, description="Terms that warn the reviewer.")
    exact: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Official names that must be written exactly: correct form -> frequent wrong forms.",
    )


class FeedSourceConfig(BaseModel):
    """One upstream source, from `[[feeds]]` in rongmei.toml."""

    name: str = Field(min_length=1, description="Who we reprint from, named on every channel, e.g. 新华网.")
    url: str = Field(description="RSS 2.0 or Atom feed URL.")
    kind: Kind = Field(
        default=Kind.article, description="Kind of entries without an audio/video enclosure."
    )
    tags: list[str] = Field(default_factory=list, description="Tags put on every reprint from this source.")
    channels: list[str] = Field(
        default_factory=list, description="Channels for reprints from this source; empty means the defaults."
    )
    enabled: bool = Field(default=True, description="A disabled source is not pulled.")


class SectionEnvSource(PydanticBaseSettingsSource):
    """RONGMEI_<SECTION>__<KEY> variables for sections the core does not declare (a channel's own table):
    pydantic-settings reads the environment only for declared fields."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        declared = set(self.settings_cls.model_fields)
        sections: dict[str, Any] = {}
        for key, value in os.environ.items():
            if not key.startswith("RONGMEI_") or "__" not in key:
                continue
            path = key[len("RONGMEI_"):].lower().split("__")
            if path[0] in declared or not all(path):
                continue
            node = sections
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                node[path[-1]] = value
        return sections


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RONGMEI_", env_nested_delimiter="__", extra="allow", toml_file="rongmei.toml"
    )

    center_name: str = Field(default="示例旗融媒体中心", description="Shown on the site and in feeds.")
    content_dir: Path = Field(default=Path("content"), description="The editors' drop tree.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Database, blobs, site, secrets.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in data_dir.")
    settle_seconds: float = Field(default=5.0, description="A drop is taken once no file changed this long.")
    max_upload_bytes: int = Field(default=4 * 1024**3, description="Largest single file accepted in a drop.")
    max_markdown_bytes: int = Field(
        default=2 * 1024**2, description="Largest index.md, single .md drop or .yaml sidecar accepted at ingest."
    )
    stages: list[ReviewStage] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    demo: bool = Field(
        default=False,
        description="Demo mode (`rongmei up --demo`): demo reviewers are enrolled and their codes can be printed. "
        "Off on a real installation, where demo reviewers are refused.",
    )
    signoff_max_failures: int = Field(
        default=5, ge=1, description="Wrong codes for one reviewer within signoff_failure_window_minutes that lock it."
    )
    signoff_failure_window_minutes: float = Field(default=15.0, gt=0, description="Window for counting wrong codes.")
    signoff_lockout_minutes: float = Field(default=15.0, gt=0, description="How long a locked reviewer stays locked.")
    default_channels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Channels per kind when the front matter names none; a kind not listed goes to every "
        "channel that takes it by default (each channel's `default_kinds`).",
    )
    zones: list[Zone] = Field(default_factory=list, description="Townships and villages.")
    screen_groups: list[ScreenGroup] = Field(default_factory=list, description="Display groups.")
    dayparts: list[str] = Field(
        default_factory=lambda: ["07:00", "12:00", "18:30"], description="Loudspeaker broadcast slots."
    )
    media: MediaSettings = Field(
        default_factory=MediaSettings, description="Renditions: limits, encoding, loudness, TTS."
    )
    feeds: list[FeedSourceConfig] = Field(
        default_factory=list, description="Upstream RSS/Atom sources reprinted through review (issue 7)."
    )
    lexicon: Lexicon = Field(default_factory=Lexicon)
    lexicon_files: list[Path] = Field(
        default_factory=list, description="Extra TOML lexicon files merged into `lexicon`."
    )
    public_url: str = Field(default="http://127.0.0.1:8800", description="Base URL terminals and readers use.")
    server_host: str = Field(default="127.0.0.1", description="Distribution server bind address.")
    server_port: int = Field(default=8800, description="Distribution server port.")
    server_header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client may take to send its request headers before we hang up."
    )
    play_clock_skew_seconds: float = Field(
        default=300.0, ge=0, description="How far a terminal's clock may be off when its play reports are checked."
    )
    prefect_port: int = Field(default=4200, description="Prefect server/UI port for `rongmei up`.")
    prefect_database_url: str = Field(
        default="",
        description="The Prefect server's database under `rongmei up`: a PostgreSQL URL, `sqlite` for Prefect's "
        "own SQLite file, or empty for a private PostgreSQL cluster in data_dir (when Debian's postgresql is "
        "installed and no SQLite history exists). On SQLite a sign-off can wait seconds for the write lock.",
    )
    s3_bucket: str = Field(default="", description="Publish to this S3 bucket instead of data_dir/site.")
    s3_endpoint_url: str = Field(default="", description="S3-compatible endpoint (OSS, COS, MinIO).")
    extra_publishers: dict[str, str] = Field(
        default_factory=dict,
        description="Local channel plugins without packaging: name -> 'module:Class' (importable module).",
    )
    publish_retries: int = Field(default=3, description="Retries of a channel delivery that may succeed later.")
    publish_retry_delay: float = Field(default=10.0, description="First retry delay in seconds; doubles each time.")
    delivery_lease_seconds: float = Field(
        default=300.0,
        description="How long a publish run owns a delivery without showing signs of life (it renews the lease at "
        "every step it records); after that the delivery counts as abandoned and the reconciler takes it over.",
    )
    reconcile_grace_seconds: float = Field(
        default=120.0, ge=0,
        description="The reconciler leaves work younger than this alone: the run that is about to take it "
        "(a review run ingest is starting, the publish run of a sign-off just given) may not be visible yet.",
    )
    reconcile_unconfirmed_per_pass: int = Field(
        default=10, ge=0, description="At most this many `unconfirmed` deliveries are re-queried per reconcile pass "
        "(WeChat's freepublish/get allows 100 calls a day for the whole account).",
    )
    reconcile_unconfirmed_interval_minutes: float = Field(
        default=10.0, gt=0, description="An unconfirmed delivery is re-queried at most this often; the wait "
        "doubles after every answer that settles nothing, up to reconcile_unconfirmed_max_interval_minutes.",
    )
    reconcile_unconfirmed_max_interval_minutes: float = Field(
        default=360.0, gt=0, description="The longest wait between two re-queries of one unconfirmed delivery.",
    )
    reconcile_dead_run_seconds: float = Field(
        default=900.0, gt=0,
        description="A flow run that Prefect still shows as running or pending but that sent no heartbeat "
        "(flow_heartbeat_seconds) for this long is dead (its process was killed): the reconciler marks it "
        "crashed and finishes its work.",
    )
    flow_heartbeat_seconds: int = Field(
        default=30, ge=0,
        description="Flow runs started by `rongmei up`'s worker send Prefect a heartbeat this often "
        "(PREFECT_FLOWS_HEARTBEAT_FREQUENCY, at least 30); 0 turns heartbeats off, and then the reconciler "
        "never judges a running run dead.",
    )
    timezone: str = Field(default="Asia/Shanghai", description="Zone for times without an offset.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("RONGMEI_CONFIG", "rongmei.toml")
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path)
        return (init_settings, env_settings, SectionEnvSource(settings_cls), toml, file_secret_settings)

    # Derived locations -------------------------------------------------------------------------
    @property
    def inbox(self) -> Path:
        return self.content_dir / "inbox"

    @property
    def archive(self) -> Path:
        return self.content_dir / "archive"

    @property
    def rejected(self) -> Path:
        return self.content_dir / "rejected"

    @property
    def returned(self) -> Path:
        return self.content_dir / "returned"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def site_dir(self) -> Path:
        return self.data_dir / "site"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'rongmei.db').resolve()}"

    def prefect_db_url(self) -> str:
        """`prefect_database_url` in the form Prefect's server needs (its PostgreSQL driver is asyncpg)."""
        url = self.prefect_database_url
        scheme, sep, rest = url.partition("://")  # empty or `sqlite`: not a URL, handled by `rongmei up`
        if sep and scheme.split("+")[0] in ("postgres", "postgresql"):
            return f"postgresql+asyncpg://{rest}"
        return url

    def channel_section(self, name: str) -> dict[str, Any]:
        """A channel's own `[<name>]` table (rongmei.toml, RONGMEI_<NAME>__<KEY> variables), unvalidated: the
        channel validates it with its `config_model`, so the core needs to know nothing about it."""
        if name in type(self).model_fields:
            value = getattr(self, name)
            return value.model_dump() if isinstance(value, BaseModel) else dict(value or {})
        section = (self.model_extra or {}).get(name, {})
        return dict(section) if isinstance(section, dict) else {}

    def stage(self, name: str) -> ReviewStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no review stage named {name!r}; configured: {[s.name for s in self.stages]}")

    def merged_lexicon(self) -> Lexicon:
        import tomllib

        merged = self.lexicon.model_copy(deep=True)
        for path in self.lexicon_files:
            data: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            extra = Lexicon.model_validate(data)
            merged.forbidden += extra.forbidden
            merged.sensitive += extra.sensitive
            for right, wrongs in extra.exact.items():
                merged.exact.setdefault(right, []).extend(wrongs)
        return merged


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)

"""The one small interface every channel implements.

A channel is one module (or package) in this package with one `Publisher` subclass. It receives a `Release`
(the exact approved version and its renditions) and answers with a `Receipt` that the publish flow stores on
the delivery record. Everything the core needs to know about a channel is declared here, on the class (its
label, colour, default kinds, capabilities and the renditions it needs, its pre-checks and preview), so the
core never names a channel and a newcomer finds a channel's whole code in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from publishers.reach import ChannelReach, ReachWindow
from rongmei.core.errors import ConfigError, PublishError
from rongmei.core.model import CheckResult, ItemMeta
from rongmei.core.settings import Settings
from rongmei.core.states import DeliveryState

if TYPE_CHECKING:
    import typer

__all__ = [
    "RECEIPT_STATES", "Capabilities", "Condition", "Correction", "LeaseLost", "LocalService", "NoConfig",
    "NoProgress", "NoSlots", "Playable", "Progress", "Publisher", "Receipt", "Release", "RenditionNeed",
    "SlotUnavailable", "Slots"
]

# The delivery states a channel may answer with (Receipt.state); the delivery layer adds the others.
RECEIPT_STATES = (DeliveryState.succeeded, DeliveryState.draft_ready, DeliveryState.unconfirmed)


class Correction(StrEnum):
    """How a channel carries a correction (更正) of something it already has."""

    in_place = "in_place"  # the published thing is updated where it is (web page, playlist entry)
    new_article = "new_article"  # cannot edit: a new piece links the original (WeChat)
    none = "none"


class Condition(StrEnum):
    """When a rendition a channel needs applies to an item; the rendition pipeline decides it per item."""

    always = "always"
    has_video = "has_video"  # the drop has a video file
    portrait_screen = "portrait_screen"  # a configured display group is taller than wide
    mongolian_title = "mongolian_title"  # language mn or zh+mn, and a title_mn is given


@dataclass(frozen=True)
class RenditionNeed:
    """One rendition a channel needs, and when.

    `no_sound` is the channel's own words for an item whose sound source (a recording, else the video) has no
    sound track, with `{file}` for the file: the rendition cannot be made, and the editor is told how to fix it.
    """

    key: str  # a key of rongmei.renditions.RECIPES, e.g. "cover_900x383"
    when: Condition = Condition.always
    no_sound: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What the channel can do; the publish and retract flows read this instead of special-casing names."""

    can_update: bool
    can_retract: bool
    retract_is_final: bool = False  # True when a retraction cannot be undone (WeChat delete)
    correction: Correction = Correction.in_place
    # Renditions the channel needs: a RenditionNeed, or a bare key for one it always needs ("cover_900x383").
    renditions: tuple[str | RenditionNeed, ...] = ()
    note: str = ""  # one sentence for technicians, shown in `rongmei status`

    def rendition_needs(self) -> tuple[RenditionNeed, ...]:
        return tuple(need if isinstance(need, RenditionNeed) else RenditionNeed(need) for need in self.renditions)


@dataclass(frozen=True)
class Release:
    """One approved version, as it will go out."""

    item_id: str
    version: int
    version_id: int
    content_hash: str
    meta: ItemMeta
    body: str  # Markdown body, front matter removed
    files: Mapping[str, Mapping[str, Any]]  # drop-relative path -> {"sha256", "bytes", ...}
    renditions: Mapping[str, Mapping[str, Any]]  # rendition key -> {"sha256", "bytes", "mime", ...}
    blob_path: Callable[[str], Path]  # sha256 -> readable local path
    approved_at: datetime | None = None
    signoffs: tuple[Mapping[str, Any], ...] = ()
    previous: Mapping[str, Any] | None = None  # the receipt of the version this one corrects, if any
    extra: Mapping[str, Any] = field(default_factory=dict)

    def file_path(self, relative: str) -> Path:
        return self.blob_path(str(self.files[relative]["sha256"]))


@dataclass(frozen=True)
class Playable:
    """A file the terminals of one audience were given by a delivery, so their play reports of it count.

    `audience` is `zone:<administrative code>` (loudspeaker terminals enrolled with `--zone`) or
    `group:<display group>` (screens enrolled with `--group`); `sha256` is the file they may play.
    """

    audience: str
    sha256: str


@dataclass
class Receipt:
    """What a channel says it did. Stored on the delivery; `state` is one of the delivery states."""

    state: str = "succeeded"  # succeeded | draft_ready | unconfirmed
    remote_id: str = ""
    url: str = ""
    message: str = ""  # for editors, in Chinese
    details: dict[str, Any] = field(default_factory=dict)
    # Channels that feed terminals say what each audience now has; the delivery layer records it (grants).
    playables: tuple[Playable, ...] = ()


class NoConfig(BaseModel):
    """The configuration of a channel that takes none: its `[<name>]` section may be absent or empty."""

    model_config = ConfigDict(extra="forbid")


class Publisher(ABC):
    """Base class of a channel. Subclasses set `name` and `capabilities` and implement the three actions.

    Contract: `publish` is called at most once successfully per (version, channel); it must raise
    `PublishError(retryable=True)` only when a retry cannot duplicate the result. `update` and `retract`
    receive the receipt of the earlier delivery to act on.

    A channel with several remote steps that cost or cannot be undone (uploads, a submit) records each step's
    result with `self.progress.record(...)` before it starts the next one, and begins by reading what an
    earlier, interrupted attempt recorded (`release.extra["previous_attempt"]`): a process killed at any line
    then resumes at the next step and never repeats an irreversible one.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    # URL path prefixes its terminals poll, e.g. ("/loudspeakers/",): access-log kind "terminal", not a page.
    polled_paths: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str] = ""  # what editors call the channel (微信公众号); shown in checks, status and reach
    color: ClassVar[str] = "#7f7f7f"  # the channel's colour in the reach chart
    default_kinds: ClassVar[tuple[str, ...]] = ()  # kinds routed here when the front matter names no channels
    # The channel's `[<name>]` section of rongmei.toml (and RONGMEI_<NAME>__<KEY> variables), validated.
    config_model: ClassVar[type[BaseModel]] = NoConfig
    # Where the channel comes in lists (routing defaults, checks, status): lower first; plugins after built-ins.
    order: ClassVar[int] = 1000

    def __init__(self, settings: Settings, *, slots: Slots | None = None) -> None:
        self.settings = settings
        self.slots: Slots = slots or NoSlots()
        # Where the channel writes ahead what its remote steps did (set by the delivery layer for each call).
        self.progress: Progress = NoProgress()

    @classmethod
    def display_name(cls) -> str:
        return cls.label or cls.name

    @classmethod
    def config_of(cls, settings: Settings) -> Any:
        """This channel's configuration section, validated; a clear error names the section and the field."""
        try:
            return cls.config_model.model_validate(settings.channel_section(cls.name))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or cls.name}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"[{cls.name}] in rongmei.toml (or RONGMEI_{cls.name.upper()}__*): {problems}") from exc

    @property
    def config(self) -> Any:
        if "_config" not in self.__dict__:
            self.__dict__["_config"] = self.config_of(self.settings)
        return self.__dict__["_config"]

    @classmethod
    def precheck(cls, meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> list[CheckResult]:
        """The channel's own limits, run by the automatic pre-checks (for items routed here) before any human
        sees the item. `settings` carries the channel's configuration, where a limit may be set."""
        return []

    @classmethod
    def check_front_matter(cls, meta: ItemMeta, settings: Settings) -> list[CheckResult]:
        """Checks of the front-matter fields this channel owns (where on the channel an item goes, e.g. zone
        codes), run for every item, routed here or not: a code nobody configured is a mistake in the drop either
        way, and the editor hears of it at the door."""
        return []

    @classmethod
    def preview(cls, release: Release, settings: Settings, token: str) -> str | None:
        """Render the channel's view of `release` for the reviewers into `<data_dir>/preview/<token>/` and
        return its path on the distribution server (`/preview/<token>/`), or None: most channels have no page
        to show (the reviewers see their renditions). Default: nothing."""
        return None

    @abstractmethod
    def publish(self, release: Release) -> Receipt: ...

    def update(self, release: Release, previous: Receipt) -> Receipt:
        raise PublishError(f"channel {self.name!r} cannot update published items", retryable=False)

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        raise PublishError(f"channel {self.name!r} cannot retract published items", retryable=False)

    def reconcile(self, item_id: str, attempt: Receipt) -> Receipt | None:
        """Find out what became of a delivery left `unconfirmed` (its answer was lost), without sending it again.

        Return the receipt of what is out there (state succeeded, or draft_ready for a draft), None when nothing
        went out, or raise PublishError when the channel cannot tell yet. Retraction calls this before undoing
        such a delivery. Channels whose calls are never left unconfirmed need not implement it."""
        raise PublishError(f"channel {self.name!r} cannot check an unconfirmed delivery; check it by hand",
                           retryable=False)

    # Reach (传播监测): the columns the channel adds to the report and the numbers behind them. Each column is a
    # `publishers.reach.ReachColumn` or a plain (key, label) tuple; the first is the channel's reach (added to
    # 总到达), any further ones engagement (shown, not added). No columns: the channel is not in the report.
    reach_columns: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @classmethod
    def reach(cls, window: ReachWindow) -> ChannelReach | None:
        """The channel's numbers for the report's window, from the sources `window` carries (page views, plays,
        the channel's own deliveries) or its own remote statistics. Default None: the channel reports nothing."""
        return None

    def refresh(self, now: datetime) -> None:  # noqa: B027 - optional hook, most channels need nothing
        """Re-apply time rules (expiry) to what the channel shows; called on a schedule. Default: nothing."""

    @classmethod
    def local_services(cls, settings: Settings) -> list[LocalService]:
        """What `rongmei up` starts for this channel on the local machine, e.g. a stand-in of its remote API when
        no account is configured; `rongmei up` stops them when it stops. Default: nothing."""
        return []

    @classmethod
    def commands(cls) -> typer.Typer | None:
        """The channel's own commands, mounted by the CLI as `rongmei <name> …` (e.g. `rongmei wechat
        set-secret`), so the CLI never names a channel. Default: none."""
        return None


@dataclass(frozen=True)
class LocalService:
    """A service a channel runs under `rongmei up` (`Publisher.local_services`)."""

    name: str  # in the log when it is stopped
    stop: Callable[[], None]
    environment: Mapping[str, str] = field(default_factory=dict)  # set for the worker and every flow run
    message: str = ""  # one line for the `rongmei up` banner


class SlotUnavailable(PublishError):
    """Raised by `Slots.hold` when the slot cannot be had (coordinator unreachable, timed out). Nothing ran under
    it, so the delivery may be tried again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class Slots(Protocol):
    """Named slots, one holder at a time across every worker on every machine, for channel calls that must not
    overlap installation-wide (WeChat: one submit per account). The publish flow hands channels the Prefect
    implementation (`rongmei.runtime.orchestration.PrefectSlots`); a channel never knows who coordinates."""

    def hold(self, name: str) -> AbstractContextManager[None]:
        """Wait for slot `name` and hold it for the `with` block; raise SlotUnavailable if it cannot be had."""
        ...


class NoSlots:
    """Coordinates nothing: outside the flows (tests, scripts, the CLI) only a channel's own file locks apply."""

    def hold(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


class LeaseLost(PublishError):
    """Raised by `Progress.record` when another run has taken the delivery over (this one was presumed dead):
    the channel must stop before its next remote step. Nothing is lost: what it recorded stays."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class Progress(Protocol):
    """The delivery's write-ahead record, as the channel sees it (`Publisher.progress`)."""

    def record(self, **details: Any) -> None:
        """Commit these details on the delivery now (merged into what is there) and renew the delivery's lease;
        raise LeaseLost if another run owns the delivery now."""
        ...


class NoProgress:
    """Records nothing: outside a delivery (tests calling a channel directly, previews, the CLI)."""

    def record(self, **details: Any) -> None:
        return None

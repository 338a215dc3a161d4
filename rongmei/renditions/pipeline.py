"""The rendition step: from an item version's files to a manifest of content-addressed renditions.

Which renditions: only what the item's channels need, as each declares in `Capabilities.renditions` (a key,
and when it applies: always, only with a video, only for portrait screens or a Mongolian title). A video's
thumbnail is made first whenever there is a video, since covers and cards may be cut from it. Each rendition
is looked up in the cache by a key over its exact inputs first.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from publishers import registry_for
from publishers.base import Condition, RenditionNeed
from rongmei.core.errors import ConfigError
from rongmei.core.media_settings import RECIPE_VERSION, MediaSettings
from rongmei.core.model import ItemMeta, Kind, Language
from rongmei.renditions import audio, video
from rongmei.renditions.cache import RenditionCache, cache_key, canonical_json
from rongmei.renditions.cards import CardText, render_card
from rongmei.renditions.errors import MediaError
from rongmei.renditions.images import crop_to, open_image, save_jpeg
from rongmei.renditions.mongolian import draw_vertical
from rongmei.renditions.probe import MediaInfo, probe
from rongmei.renditions.tts import load_engine, spoken_text

if TYPE_CHECKING:  # rongmei.core.settings may import this package's config; keep the import one-way at run time
    from rongmei.core.settings import Settings

__all__ = [
    "AUDIO_EXTENSIONS", "IMAGE_EXTENSIONS", "KIND_LABELS", "NO_SOUND", "PRIORITY_LABELS", "RECIPES",
    "RECORDING_STEMS", "VIDEO_EXTENSIONS", "Job", "Progress", "Recipe", "channel_needs",
    "make_bilingual_card", "make_card", "make_cover", "make_loudspeaker_audio", "make_thumbnail",
    "make_video_screen", "make_video_web", "manifest_hash", "needed_renditions", "produce_renditions"
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}
AUDIO_EXTENSIONS = {".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic"}
RECORDING_STEMS = ("recording", "audio")  # a human recording in the drop always wins over TTS
KIND_LABELS = {Kind.notice: "通知", Kind.video: "视频", Kind.audio: "音频", Kind.article: ""}
PRIORITY_LABELS = {"urgent": "紧急", "emergency": "应急广播"}
# When the channel that needs a spoken rendition gives no words of its own for a source without sound.
NO_SOUND = "{file} 没有声音轨，无法生成{label}。请附一段录音 audio.mp3。"

Progress = Callable[[str, float], None]


@dataclass
class Job:
    """Everything one run knows: the item, where its files are, and what was already produced."""

    meta: ItemMeta
    body: str
    files: Mapping[str, Mapping[str, Any]]
    blob_path: Callable[[str], Path]
    put_file: Callable[[Path], tuple[str, int]]
    center_name: str
    config: MediaSettings
    work_dir: Path
    progress: Progress | None
    screen_sizes: list[tuple[int, int]]
    cache: RenditionCache
    fingerprint: dict[str, Any]
    needs: dict[str, RenditionNeed] = field(default_factory=dict)  # rendition key -> what the channels asked for
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    _probes: dict[str, MediaInfo] = field(default_factory=dict)
    _pictures: dict[str, Image.Image] = field(default_factory=dict)

    # Inputs -------------------------------------------------------------------------------------------
    def first(self, extensions: set[str], stems: Sequence[str] = ()) -> str | None:
        names = sorted(self.files, key=lambda rel: (rel.count("/"), rel))
        for rel in names:
            path = Path(rel)
            if path.suffix.lower() in extensions and (not stems or path.stem.lower() in stems):
                return rel
        return None

    @property
    def video_rel(self) -> str | None:
        return self.first(VIDEO_EXTENSIONS, ("video",)) or self.first(VIDEO_EXTENSIONS)

    @property
    def recording_rel(self) -> str | None:
        rel = self.first(AUDIO_EXTENSIONS, RECORDING_STEMS)
        if rel is None and self.meta.kind is Kind.audio:
            rel = self.first(AUDIO_EXTENSIONS)
        return rel

    @property
    def picture_rel(self) -> str | None:
        return self.first(IMAGE_EXTENSIONS, ("cover",)) or self.first(IMAGE_EXTENSIONS)

    def sha(self, rel: str) -> str:
        return str(self.files[rel]["sha256"])

    def path(self, rel: str) -> Path:
        return self.blob_path(self.sha(rel))

    def probe(self, rel: str) -> MediaInfo:
        if rel not in self._probes:
            self._probes[rel] = probe(self.path(rel))
        return self._probes[rel]

    def picture_source(self) -> tuple[str | None, Path | None]:
        """The picture behind covers and cards: cover/first image, else the video's thumbnail."""
        rel = self.picture_rel
        if rel is not None:
            return self.sha(rel), self.path(rel)
        if "thumbnail" in self.manifest:
            sha = str(self.manifest["thumbnail"]["sha256"])
            return sha, self.blob_path(sha)
        return None, None

    def picture(self) -> Image.Image | None:
        """The decoded picture, once per run (covers and cards all start from it)."""
        sha, path = self.picture_source()
        if sha is None or path is None:
            return None
        if sha not in self._pictures:
            self._pictures[sha] = open_image(path, self.config)
        return self._pictures[sha]

    def applies(self, need: RenditionNeed) -> bool:
        """Whether a channel's need holds for this item (a video, a portrait screen, a Mongolian title)."""
        if need.when is Condition.has_video:
            return self.video_rel is not None
        if need.when is Condition.portrait_screen:
            return any(h > w for w, h in self.screen_sizes)
        if need.when is Condition.mongolian_title:
            return self.meta.language in (Language.mn, Language.zh_mn) and bool(self.meta.title_mn)
        return True

    def no_sound(self, key: str, rel: str) -> str:
        """What the editor reads when `rel`, the source of rendition `key`, has no sound track."""
        need = self.needs.get(key)
        template = need.no_sound if need and need.no_sound else NO_SOUND
        return template.format(file=rel, label=RECIPES[key].label)

    def date_text(self) -> str:
        return self.meta.publish_at.strftime("%Y年%m月%d日") if self.meta.publish_at else ""

    def card_text(self) -> CardText:
        label = PRIORITY_LABELS.get(self.meta.priority.value) or KIND_LABELS.get(self.meta.kind, "")
        if self.meta.priority.value in PRIORITY_LABELS and self.meta.kind is Kind.notice:
            label += "通知"
        footer = " · ".join(part for part in (self.center_name, self.date_text()) if part)
        return CardText(title=self.meta.title, summary=self.meta.summary, label=label, footer=footer,
                        priority=self.meta.priority.value)

    def out(self, name: str) -> Path:
        return self.work_dir / name

    def report(self, label: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(label, fraction)


# Recipes: (inputs for the cache key, maker writing the file and returning probed facts) ------------------
def _image_facts(path: Path) -> dict[str, Any]:
    with Image.open(path) as image:
        return {"width": image.width, "height": image.height}


def _card_inputs(job: Job) -> dict[str, Any]:
    sha, _ = job.picture_source()
    text = job.card_text()
    return {"picture": sha, "title": text.title, "summary": text.summary, "label": text.label,
            "footer": text.footer, "priority": text.priority}


def make_cover(size: tuple[int, int]) -> Callable[[Job, Path], dict[str, Any]]:
    def make(job: Job, target: Path) -> dict[str, Any]:
        picture = job.picture()
        if picture is not None:
            save_jpeg(crop_to(picture, size), target)
        else:  # an article without pictures still needs a cover: the headline on the house background
            card, _ = render_card(size, CardText(title=job.meta.title, footer=job.center_name))
            save_jpeg(card, target)
        return _image_facts(target)
    return make


def make_card(size: tuple[int, int]) -> Callable[[Job, Path], dict[str, Any]]:
    def make(job: Job, target: Path) -> dict[str, Any]:
        card, layout = render_card(size, job.card_text(), job.picture())
        save_jpeg(card, target, quality=90)
        return _image_facts(target) | {"title_font_px": layout.title_size, "title_truncated": layout.truncated}
    return make


def make_bilingual_card(job: Job, target: Path) -> dict[str, Any]:
    width, height = video.SCREEN_SIZE
    card, layout = render_card((width, height), job.card_text(), job.picture(), text_width_share=0.66)
    margin = round(height * 0.09)
    left = margin + round((width - 2 * margin) * 0.66) + round(height * 0.05)
    box = (left, margin, width - margin, height - margin)
    title_cols = draw_vertical(card, job.meta.title_mn, box, size=round(height * 0.05))
    if job.meta.summary_mn and title_cols:
        next_left = max(b[2] for b in title_cols) + round(height * 0.04)
        draw_vertical(card, job.meta.summary_mn, (next_left, margin, width - margin, height - margin),
                      size=round(height * 0.034), fill=(222, 230, 240))
    save_jpeg(card, target, quality=90)
    return _image_facts(target) | {"title_font_px": layout.title_size, "language": job.meta.language.value}


def make_thumbnail(job: Job, target: Path) -> dict[str, Any]:
    rel = job.video_rel
    assert rel is not None
    video.thumbnail(job.path(rel), target, job.probe(rel))
    return _image_facts(target)


def make_video_web(job: Job, target: Path) -> dict[str, Any]:
    rel = job.video_rel
    assert rel is not None
    video.video_web(job.path(rel), target, job.probe(rel), job.config, progress=job.progress)
    return probe(target).facts() | {"faststart": True}


def make_video_screen(job: Job, target: Path) -> dict[str, Any]:
    rel = job.video_rel
    assert rel is not None
    subs = job.first({".srt"})
    video.video_screen(job.path(rel), target, job.probe(rel), job.config,
                       subtitles=job.path(subs) if subs else None, progress=job.progress)
    return probe(target).facts() | {"faststart": True, "subtitles": bool(subs)}


def _speech_source(job: Job) -> tuple[str, dict[str, Any]]:
    if (rel := job.recording_rel) is not None:
        return "recording", {"file": job.sha(rel)}
    if (rel := job.video_rel) is not None:
        return "soundtrack", {"file": job.sha(rel)}
    engine = load_engine(job.config)
    text = spoken_text(job.meta.title, job.body)
    return "tts", {"text_sha256": hashlib.sha256(text.encode()).hexdigest(), "engine": engine.name}


def _audio_inputs(job: Job) -> dict[str, Any]:
    source, inputs = _speech_source(job)
    return inputs | {"source": source, "title": job.meta.title, "center": job.center_name,
                     "date": job.date_text(), "item": job.meta.id, "author": job.meta.source or job.center_name}


def _encoded_speech(job: Job) -> tuple[Path, dict[str, Any]]:
    """The normalised MP3 before tagging, cached on its own: a new headline only re-tags, never re-encodes."""
    source, inputs = _speech_source(job)
    key = cache_key("loudspeaker_audio_untagged", {"version": RECIPE_VERSION, "settings": job.fingerprint,
                                                   **inputs})
    cached = job.cache.get(key)
    if cached is not None and job.blob_path(str(cached["sha256"])).is_file():
        return job.blob_path(str(cached["sha256"])), cached
    extra: dict[str, Any] = {"source": source}
    if source == "tts":
        engine = load_engine(job.config)
        speech = job.out("speech.wav")
        job.report("语音合成", 0.0)
        engine.synthesize(spoken_text(job.meta.title, job.body), speech)
        extra["engine"] = engine.name
        origin = speech
    else:
        rel = job.recording_rel if source == "recording" else job.video_rel
        assert rel is not None
        origin = job.path(rel)
        if job.probe(rel).audio is None:
            raise MediaError(job.no_sound("loudspeaker_audio", rel))
    info = probe(origin)
    encoded = job.out("speech-untagged.mp3")
    facts = audio.loudspeaker_audio(origin, encoded, job.config, duration_s=info.duration_s, progress=job.progress)
    facts = probe(encoded).facts() | facts | extra
    sha, _ = job.put_file(encoded)
    facts["sha256"] = sha
    job.cache.put(key, facts)
    return job.blob_path(sha), facts


def make_loudspeaker_audio(job: Job, target: Path) -> dict[str, Any]:
    encoded, facts = _encoded_speech(job)
    shutil.copyfile(encoded, target)
    audio.write_tags(target, title=job.meta.title, artist=job.meta.source or job.center_name,
                     publisher=job.center_name,
                     date=job.meta.publish_at.date().isoformat() if job.meta.publish_at else "",
                     item_id=job.meta.id, comment=job.meta.summary)
    return {k: v for k, v in facts.items() if k != "sha256"}


@dataclass(frozen=True)
class Recipe:
    suffix: str
    inputs: Callable[[Job], dict[str, Any]]
    make: Callable[[Job, Path], dict[str, Any]]
    label: str


def _video_inputs(job: Job) -> dict[str, Any]:
    rel = job.video_rel
    return {"video": job.sha(rel) if rel else None}


def _screen_video_inputs(job: Job) -> dict[str, Any]:
    subs = job.first({".srt"})
    return _video_inputs(job) | {"subtitles": job.sha(subs) if subs else None}


# In production order: the thumbnail first (covers and cards may be cut from it), then pictures, then media.
RECIPES: dict[str, Recipe] = {
    "thumbnail": Recipe(".jpg", _video_inputs, make_thumbnail, "视频封面帧"),
    "cover_900x383": Recipe(".jpg", lambda job: {"picture": job.picture_source()[0], "title": job.meta.title,
                                                 "center": job.center_name}, make_cover((900, 383)), "微信封面"),
    "cover_1x1": Recipe(".jpg", lambda job: {"picture": job.picture_source()[0], "title": job.meta.title,
                                             "center": job.center_name}, make_cover((600, 600)), "微信方形封面"),
    "share_image": Recipe(".jpg", _card_inputs, make_card((1200, 630)), "分享图"),
    "video_web": Recipe(".mp4", _video_inputs, make_video_web, "网页/微信视频"),
    "screen_card": Recipe(".jpg", _card_inputs, make_card(video.SCREEN_SIZE), "大屏标题卡"),
    "screen_card_portrait": Recipe(".jpg", _card_inputs, make_card((1080, 1920)), "竖屏标题卡"),
    "screen_card_mn": Recipe(".jpg", lambda job: _card_inputs(job) | {"title_mn": job.meta.title_mn,
                                                                      "summary_mn": job.meta.summary_mn},
                             make_bilingual_card, "蒙汉双语标题卡"),
    "video_screen": Recipe(".mp4", _screen_video_inputs, make_video_screen, "大屏视频"),
    "loudspeaker_audio": Recipe(".mp3", _audio_inputs, make_loudspeaker_audio, "村村响音频"),
}


def needed_renditions(job: Job, needs: Iterable[RenditionNeed]) -> list[str]:
    """Rendition keys in production order (RECIPES order) for the channels' `needs` that hold for the item."""
    wanted = {"thumbnail"} if job.video_rel is not None else set()
    for need in needs:
        if need.key not in RECIPES:
            raise ConfigError(f"a channel needs the rendition {need.key!r}, which the rendition step cannot make; "
                              f"known renditions: {', '.join(RECIPES)}")
        if job.applies(need):
            wanted.add(need.key)
    return [key for key in RECIPES if key in wanted]


def channel_needs(settings: Settings, channels: Sequence[str]) -> list[RenditionNeed]:
    """What the item's channels declare they need; a channel that is not registered needs nothing here (the
    pre-checks refused it at the door, and its delivery says why)."""
    registry = registry_for(settings)
    needs = [need for name in channels if name in registry.publishers
             for need in registry.publishers[name].capabilities.rendition_needs()]
    return sorted(needs, key=lambda need: not need.no_sound)  # the channels' own words for a problem first


def produce_renditions(*, meta: ItemMeta, body: str, files: Mapping[str, Mapping[str, Any]],
                       blob_path: Callable[[str], Path], put_file: Callable[[Path], tuple[str, int]],
                       settings: Settings, channels: Sequence[str], work_dir: Path,
                       progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    """Produce (or reuse) every rendition the channels need; returns key → facts (sha256, bytes, mime, …)."""
    config = MediaSettings.from_settings(settings)
    work_dir.mkdir(parents=True, exist_ok=True)
    job = Job(meta=meta, body=body, files=files, blob_path=blob_path, put_file=put_file,
              center_name=getattr(settings, "center_name", ""), config=config, work_dir=work_dir,
              progress=progress,
              screen_sizes=[tuple(g.size) for g in getattr(settings, "screen_groups", [])],  # type: ignore[misc]
              cache=RenditionCache(Path(settings.data_dir) / "renditions-cache"), fingerprint=config.fingerprint())
    needs = channel_needs(settings, channels)
    for need in reversed(needs):  # the first need of a key wins: one with the channel's own words, if any
        job.needs[need.key] = need
    cache, fingerprint = job.cache, job.fingerprint
    for key in needed_renditions(job, needs):
        recipe = RECIPES[key]
        ckey = cache_key(key, {"version": RECIPE_VERSION, "settings": fingerprint, **recipe.inputs(job)})
        cached = cache.get(ckey)
        if cached is not None and blob_path(str(cached["sha256"])).is_file():
            job.manifest[key] = cached
            job.report(recipe.label, 1.0)
            continue
        started = time.monotonic()
        job.report(recipe.label, 0.0)
        target = job.out(f"{key}{recipe.suffix}")
        facts = recipe.make(job, target)
        sha, size = put_file(target)
        facts = {"sha256": sha, "bytes": size, "mime": mimetypes.types_map[recipe.suffix], **facts,
                 "recipe": RECIPE_VERSION}
        cache.put(ckey, facts)
        job.manifest[key] = facts
        job.report(recipe.label, 1.0)
        log.info("rendition %s of %s: %s bytes in %.1f s", key, meta.id, size, time.monotonic() - started)
    return job.manifest


def manifest_hash(manifest: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of the manifest; part of what every sign-off covers."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()

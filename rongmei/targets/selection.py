"""Which target this installation publishes to: the S3 bucket when one is configured, else data_dir/site."""

from __future__ import annotations

from rongmei.core.errors import ConfigError
from rongmei.core.settings import Settings
from rongmei.targets.base import Target
from rongmei.targets.directory import DirectoryTarget

__all__ = ["target_from_settings"]


def target_from_settings(settings: Settings) -> Target:
    if settings.s3_bucket:
        try:
            from rongmei.targets.s3 import S3Target
        except ImportError as exc:  # pragma: no cover - only when the S3 module is missing
            raise ConfigError("s3_bucket is set but the S3 target is not available") from exc
        return S3Target(settings.s3_bucket, endpoint_url=settings.s3_endpoint_url or None,
                        journal_dir=settings.data_dir / "s3-uploads")
    return DirectoryTarget(settings.site_dir)

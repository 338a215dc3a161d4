"""One error hierarchy. Messages name the value that was wrong and how to fix it."""

from __future__ import annotations


class RongmeiError(Exception):
    """Base class of every error rongmei raises on purpose."""


class ConfigError(RongmeiError):
    """Raised when the configuration cannot work as given."""


class DropError(RongmeiError):
    """Raised when a drop cannot be read at all (the problems list goes to REJECTED.md)."""


class StoreError(RongmeiError):
    """Raised when the store refuses an operation (unknown item, wrong state)."""


class LedgerTampered(RongmeiError):
    """Raised when the ledger's hash chain does not verify."""


class SignOffRefused(RongmeiError):
    """Raised when a sign-off does not count (bad code, wrong role, four-eyes rule)."""


class PublishError(RongmeiError):
    """Raised by a publisher. `retryable` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

"""One error hierarchy. Messages name the value that was wrong and how to fix it."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError", "DeliveryRefused", "DropError", "LedgerTampered", "PublishError", "RongmeiError",
    "SignOffRefused", "StoreError", "TransitionRefused"
]


class RongmeiError(Exception):
    """Base class of every error rongmei raises on purpose."""


class ConfigError(RongmeiError):
    """Raised when the configuration cannot work as given."""


class DropError(RongmeiError):
    """Raised when a drop cannot be read at all (the problems list goes to REJECTED.md)."""


class StoreError(RongmeiError):
    """Raised when the store refuses an operation (unknown item, wrong state)."""


class TransitionRefused(StoreError):
    """Raised when a state change is not one the workflow allows (rongmei.core.states); nothing was written."""


class LedgerTampered(RongmeiError):
    """Raised when the ledger's hash chain does not verify."""


class SignOffRefused(RongmeiError):
    """Raised when a sign-off does not count (bad code, wrong role, four-eyes rule)."""


class PublishError(RongmeiError):
    """Raised by a publisher. `retryable` says whether trying again can help; `state` overrides the delivery
    state it leaves (e.g. "unconfirmed" when an irreversible call may have happened) and `details` are kept on
    the delivery record for the next attempt (e.g. the draft's media_id)."""

    retryable: bool
    state: str | None
    details: dict[str, Any]

    def __init__(self, message: str, *, retryable: bool = False, state: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.state = state
        self.details = dict(details or {})


class DeliveryRefused(RongmeiError):
    """Raised when the delivery gate refuses a version: it is not signed off in every stage, or was retracted,
    superseded, returned or rejected (rongmei.delivery.gate). Nothing reached any channel."""

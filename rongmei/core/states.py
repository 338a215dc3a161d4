"""The states an item, a version and a delivery can be in, and which changes between them are allowed.

One table per kind of record, so the rules of the workflow can be read in one place and every change is checked
against them (rongmei.storage.transitions applies them). The values are what the store holds: they never change,
or existing databases would read differently.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DELIVERY_TRANSITIONS", "DONE_STATES", "ITEM_TRANSITIONS", "LIVE_STATES", "VERSION_TRANSITIONS",
    "DeliveryState", "ItemState"
]


class ItemState(StrEnum):
    """Where an item, and each of its versions, stands in the workflow (`items.state`, `versions.state`)."""

    in_review = "in_review"
    returned = "returned"
    rejected = "rejected"
    approved = "approved"
    published = "published"
    retracted = "retracted"
    superseded = "superseded"  # a version only: a newer version of its item was dropped while it was in review


class DeliveryState(StrEnum):
    """What became of one delivery (`deliveries.state`), or of one call to deliver (`refused`)."""

    pending = "pending"
    in_progress = "in_progress"
    succeeded = "succeeded"
    failed = "failed"
    retrying = "retrying"
    unconfirmed = "unconfirmed"  # an irreversible call whose answer was lost: settled with the channel later
    draft_ready = "draft_ready"  # the channel holds a draft (WeChat without publish rights)
    skipped = "skipped"
    refused = "refused"  # the delivery gate said no: never stored, nothing was claimed


# from -> the states it may change to. An item goes back to review whenever a new version is dropped, and may be
# retracted from anywhere (a re-run of a retraction retracts it again).
ITEM_TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    state: frozenset({ItemState.in_review, ItemState.retracted}) for state in ItemState
}
ITEM_TRANSITIONS[ItemState.in_review] |= {ItemState.approved, ItemState.returned, ItemState.rejected}
ITEM_TRANSITIONS[ItemState.approved] |= {ItemState.published}
ITEM_TRANSITIONS[ItemState.published] |= {ItemState.published}

# A version is immutable content; only its standing changes, and once it is out of the running it stays out.
VERSION_TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    ItemState.in_review: frozenset({ItemState.approved, ItemState.returned, ItemState.rejected,
                                    ItemState.superseded, ItemState.retracted}),
    ItemState.approved: frozenset({ItemState.published, ItemState.retracted}),
    ItemState.published: frozenset({ItemState.published, ItemState.retracted}),
    ItemState.returned: frozenset(),
    ItemState.rejected: frozenset(),
    ItemState.retracted: frozenset(),
    ItemState.superseded: frozenset(),
}

_OUTCOMES = frozenset({DeliveryState.succeeded, DeliveryState.draft_ready, DeliveryState.unconfirmed,
                       DeliveryState.failed, DeliveryState.retrying})
# A delivery that is done is never attempted again; anything else may be claimed for another attempt (a crash
# may leave one in_progress), and an unconfirmed one may instead be settled with what the channel reports.
DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.pending: frozenset({DeliveryState.in_progress}),
    DeliveryState.in_progress: _OUTCOMES | {DeliveryState.in_progress},
    DeliveryState.retrying: frozenset({DeliveryState.in_progress, DeliveryState.failed}),
    DeliveryState.failed: frozenset({DeliveryState.in_progress}),
    DeliveryState.unconfirmed: frozenset({DeliveryState.in_progress, DeliveryState.succeeded,
                                          DeliveryState.draft_ready, DeliveryState.failed,
                                          DeliveryState.unconfirmed}),
    DeliveryState.succeeded: frozenset(),
    DeliveryState.draft_ready: frozenset(),
    DeliveryState.skipped: frozenset(),
    DeliveryState.refused: frozenset(),
}

# A delivery in one of these has reached the channel (a draft never reached readers, but is harmless).
DONE_STATES = (DeliveryState.succeeded, DeliveryState.draft_ready)
# A version in one of these is, or may any moment be, out on a channel.
LIVE_STATES = (ItemState.approved, ItemState.published)

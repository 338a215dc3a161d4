"""Delivery leases: which run is calling the channel for a delivery right now, until when, and what it has done.

Claiming a delivery records a holder (the flow run, host and process, plus a random part: unique per call)
and an expiry. While the channel works, a `LeaseKeeper` renews the lease in the background and commits the
channel's write-ahead records (`Publisher.progress`). So:

- a second run that claims the same delivery while the lease is live skips it (nothing is sent twice);
- a run that died (SIGKILL, power cut) stops renewing: once the lease has expired, the next claimant takes
  the delivery over, is handed what the dead run recorded, and the channel is asked what actually happened
  before anything is sent again (`rongmei.delivery.deliveries.deliver`);
- a run that was presumed dead and wakes up finds the lease gone at its next record and stops (`LeaseLost`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from publishers.base import LeaseLost
from rongmei.core.errors import PublishError
from rongmei.core.states import DONE_STATES, DeliveryState
from rongmei.delivery.gate import Caller
from rongmei.delivery.grants import as_utc
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery
from rongmei.storage.transitions import LedgerNote, transition

__all__ = ["RESUMABLE_STATES", "Claim", "LeaseKeeper", "claim", "lease_is_live", "new_holder", "release_lease"]

log = logging.getLogger(__name__)
# The states whose recorded details an attempt resumes from: an interrupted one (its run died), one that will
# be retried, one whose outcome is not known. A failed delivery starts afresh.
RESUMABLE_STATES = (DeliveryState.in_progress, DeliveryState.retrying, DeliveryState.unconfirmed)


@dataclass
class Claim:
    """The outcome of claiming a delivery."""

    delivery: Delivery  # detached: the row as the claim left it
    holder: str
    previous_attempt: dict[str, Any] = field(default_factory=dict)  # what an earlier attempt recorded
    taken_over: bool = False  # the delivery was in_progress under an expired lease: its run died
    busy_with: str = ""  # another run holds a live lease: nothing was claimed

    @property
    def done(self) -> bool:
        return self.delivery.state in DONE_STATES


def new_holder(caller: Caller) -> str:
    """Who holds a lease: the flow run (if any), the host and process, and a random part unique to this call."""
    host = socket.gethostname()[:40]
    return f"{caller.flow_run_id or 'no-run'}/{host}/{os.getpid()}/{secrets.token_hex(4)}"


def lease_is_live(delivery: Delivery, now: datetime | None = None) -> bool:
    """Someone is working on this delivery right now (its lease has not expired)."""
    if delivery.state != DeliveryState.in_progress or not delivery.lease_holder or delivery.lease_expires is None:
        return False
    return as_utc(delivery.lease_expires) > (now or datetime.now(UTC))


def claim(store: Store, version: VersionSnapshot, channel: str, action: str, *, holder: str,
          lease_seconds: float, actor: str = "system:publish") -> Claim:
    """Get or create the delivery row and take its lease for one attempt (see the module docstring)."""
    version_id, item_id = version.id, version.item_id
    for _ in range(2):
        try:
            with store.session() as session:
                delivery = session.scalars(
                    select(Delivery).where(Delivery.version_id == version_id, Delivery.channel == channel,
                                           Delivery.action == action).with_for_update()
                ).first()
                if delivery is None:
                    delivery = Delivery(item_id=item_id, version_id=version_id, channel=channel, action=action,
                                        state=DeliveryState.pending, details={})
                    session.add(delivery)
                    session.flush()
                if delivery.state in DONE_STATES:
                    return Claim(delivery, holder)
                now = datetime.now(UTC)
                if lease_is_live(delivery, now):
                    return Claim(delivery, holder, busy_with=delivery.lease_holder)
                taken_over = delivery.state == DeliveryState.in_progress
                previous = dict(delivery.details or {}) if delivery.state in RESUMABLE_STATES else {}
                note = None
                if taken_over:
                    note = LedgerNote(
                        "delivery_taken_over", actor=actor, item_id=item_id, version=version.number,
                        content_hash=version.signed_hash, details={
                            "channel": channel, "action": action,
                            "abandoned_by": delivery.lease_holder or "(before leases)",
                            "lease_expired": as_utc(delivery.lease_expires).isoformat()
                            if delivery.lease_expires else "", "recorded": sorted(previous)})
                transition(session, [(delivery, DeliveryState.in_progress)], note)
                delivery.attempts = (delivery.attempts or 0) + 1
                delivery.lease_holder = holder
                delivery.lease_expires = now + timedelta(seconds=lease_seconds)
                session.flush()
                return Claim(delivery, holder, previous, taken_over)
        except IntegrityError:
            continue  # another run created the row at the same moment: read it again
    raise PublishError(f"could not claim delivery {channel}/{action} for version {version_id}", retryable=True)


def release_lease(row: Delivery, holder: str) -> bool:
    """Clear the lease as the outcome is written (in the caller's session); False if it is not ours any more."""
    ours = row.lease_holder == holder
    if ours:
        row.lease_holder, row.lease_expires = "", None
    return ours


class LeaseKeeper:
    """Holds a claimed lease for the duration of the channel call: the channel's `Publisher.progress`.

    Renews the lease every quarter of its length in a background thread (a long WeChat poll or a large upload
    keeps it), and `record` commits write-ahead details and renews at once. If another run has taken the
    delivery over, `record` raises LeaseLost and the channel stops before its next remote step.
    """

    def __init__(self, store: Store, delivery_id: int, holder: str, lease_seconds: float) -> None:
        self.store = store
        self.delivery_id = delivery_id
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._keep, name=f"lease-{self.delivery_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _keep(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                self._renew({})
            except Exception as exc:  # a database hiccup: the next renewal (or the record) tries again
                log.warning("could not renew the lease of delivery %s: %s", self.delivery_id, exc)

    def _renew(self, details: dict[str, Any]) -> bool:
        with self.store.session() as session:
            row = session.get(Delivery, self.delivery_id, with_for_update=True)
            if row is None or row.lease_holder != self.holder or row.state != DeliveryState.in_progress:
                self.lost = True
                return False
            row.lease_expires = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
            if details:
                row.details = {**(row.details or {}), **details}
        return True

    def record(self, **details: Any) -> None:
        if self.lost or not self._renew(details):
            raise LeaseLost("另一个发布任务已接手这次发送（本任务曾被认为已中断）：本任务到此停止，不会重复发送")

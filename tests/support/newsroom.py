"""The people around a fault system: an editor who drops an item, three reviewers who sign it in the Prefect
UI's forms (real TOTP codes), and someone who watches it go out. Every wait is on a condition."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.flow_runs import resume_flow_run
from sqlalchemy import select

from rongmei.review.reviewers import enroll
from rongmei.storage.store import Store
from tests.support.faults import FaultSystem, wait_until
from tests.support.review import code_for

__all__ = ["Newsroom"]

ROLES = {"first": "editor", "second": "desk_head", "final": "chief_editor"}


class Newsroom:
    """Items of one fault system, each with reviewers of its own (a code counts once per reviewer and step)."""

    def __init__(self, system: FaultSystem) -> None:
        self.system = system
        self.settings = system.settings
        self.store = Store.from_settings(system.settings)

    # The editor --------------------------------------------------------------------------------------
    def drop(self, item_id: str, title: str, channels: list[str], *, files: dict[str, bytes] | None = None,
             kind: str = "article", body: str = "正文第一段。\n\n正文第二段。") -> None:
        front = f"id: {item_id}\ntitle: {title}\nauthor: 故障演练\nkind: {kind}\nchannels: [{', '.join(channels)}]"
        self.system.drop(item_id, front, body, files)
        for stage in ROLES:
            reviewer = self.reviewer(item_id, stage)
            enroll(self.store, self.settings, reviewer, f"{stage} 审核人", [ROLES[stage]], actor="test")

    @staticmethod
    def reviewer(item_id: str, stage: str) -> str:
        return f"{item_id}-{stage}"

    # The reviewers -----------------------------------------------------------------------------------
    def waiting_form(self, item_id: str, key: str, timeout: float = 900) -> Any:
        """The item's review run that waits at the form `key` (whichever run that is: the reconciler may have
        started a new one), once its form can take an answer."""
        def paused() -> Any:
            with self.system.prefect(), get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"item:{item_id}"])))
            for run in runs:
                state = run.state
                if (run.name.startswith("审核") and state is not None and state.is_paused()
                        and state.state_details.pause_key == key and state.state_details.run_input_keyset):
                    return run
            return None

        return wait_until(paused, f"{item_id} waiting at the form {key}", timeout, every=0.5,
                          diagnose=lambda: self.describe(item_id))

    def sign(self, item_id: str, stage: str, attempt: int = 0, timeout: float = 900) -> None:
        """The stage's reviewer answers the form (approve) with a fresh code."""
        key = f"{stage}-{attempt}"
        run = self.waiting_form(item_id, key, timeout)
        reviewer = self.reviewer(item_id, stage)
        with self.system.prefect():
            resume_flow_run(run.id, run_input={"decision": "approve", "reviewer": reviewer,
                                               "code": code_for(self.settings, reviewer), "comment": ""})

    def signed_stages(self, item_id: str) -> set[str]:
        from rongmei.storage.tables import SignOff

        with self.store.session() as session:
            version = self.store.latest_version(session, item_id)
            if version is None:
                return set()
            rows = session.scalars(select(SignOff).where(SignOff.version_id == version.id,
                                                         SignOff.decision == "approve"))
            return {s.stage for s in rows if s.signed_hash == version.signed_hash}

    # Watching it go out ------------------------------------------------------------------------------
    def deliveries(self, item_id: str) -> dict[str, tuple[str, int]]:
        """channel -> (state, attempts) of the item's publish deliveries."""
        from rongmei.storage.tables import Delivery

        with self.store.session() as session:
            return {d.channel: (d.state, d.attempts) for d in session.scalars(
                select(Delivery).where(Delivery.item_id == item_id, Delivery.action == "publish"))}

    def await_published(self, item_id: str, channels: list[str], timeout: float = 900) -> dict[str, tuple[str, int]]:
        """Until every channel's publish delivery succeeded; returns the deliveries."""
        def done() -> dict[str, tuple[str, int]] | None:
            found = self.deliveries(item_id)
            return found if all(found.get(c, ("",))[0] == "succeeded" for c in channels) else None

        return wait_until(done, f"{item_id} published on {channels}", timeout, every=0.5,
                          diagnose=lambda: self.describe(item_id))

    def runs(self, item_id: str, prefix: str = "") -> list[Any]:
        with self.system.prefect(), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"item:{item_id}"])))
        return [r for r in runs if r.name.startswith(prefix)]

    def await_run_ended(self, item_id: str, prefix: str = "审核", timeout: float = 600) -> None:
        """Until Prefect shows none of the item's runs as running (the worker reported the killed one)."""
        def ended() -> bool:
            return not any(r.state is not None and r.state.is_running() for r in self.runs(item_id, prefix))

        wait_until(ended, f"{item_id}: no {prefix} run running", timeout, every=0.5,
                   diagnose=lambda: self.describe(item_id))

    def await_leases_expired(self, item_id: str, timeout: float = 600) -> None:
        """Until no delivery of the item is held by a live lease (its run died; the lease ran out)."""
        from datetime import UTC, datetime

        from rongmei.storage.tables import Delivery

        def expired() -> bool:
            now = datetime.now(UTC)
            with self.store.session() as session:
                rows = session.scalars(select(Delivery).where(Delivery.item_id == item_id,
                                                              Delivery.state == "in_progress")).all()
                return all(r.lease_expires is None or r.lease_expires.replace(tzinfo=UTC) < now for r in rows)

        wait_until(expired, f"{item_id}: leases of its deliveries expired", timeout, every=0.5,
                   diagnose=lambda: self.describe(item_id))

    def item_state(self, item_id: str) -> str:
        from rongmei.storage.tables import Item

        with self.store.session() as session:
            item = session.get(Item, item_id)
            return item.state if item is not None else ""

    def describe(self, item_id: str) -> str:
        """What a technician would look at: the item, its deliveries, its runs, the end of the up log."""
        lines = [f"item {item_id}: state {self.item_state(item_id) or '(not in the store)'}, "
                 f"deliveries {self.deliveries(item_id)}"]
        try:
            with self.system.prefect(), get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"item:{item_id}"])))
            lines += [f"  run {r.name} {r.id}: {r.state.name if r.state else '?'} "
                      f"{(r.state.message or '')[:200] if r.state else ''}" for r in runs]
        except Exception as exc:  # the server may be what is broken
            lines.append(f"  (runs unreadable: {exc})")
        return "\n".join(lines) + "\n--- up.log ---\n" + self.system.log_tail(size=1500)

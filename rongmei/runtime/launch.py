"""The flow-run launcher: every rongmei flow run starts here, then becomes Prefect's engine.

Anyone with the Prefect API login can create deployments in the `rongmei` work pool, or change ours: a new
entrypoint, pull steps that run shell commands (`run_shell_script`), other code. Prefect's engine would load
and run whatever the deployment says. This launcher runs only the flows this checkout ships: the run must
come from a deployment that `prefect.yaml` defines (same deployment and flow names), and its flow is loaded
from the entrypoint written in our `prefect.yaml` on disk, never from the API; pull steps are never run (the
working directory is the checkout). A run that fails the check is marked Failed with the reason and recorded
in the ledger; nothing of it runs.

    python -m rongmei.runtime.launch <flow-run-id>     # what the worker's command ends in (via rongmei.runtime.warmstart)
"""

from __future__ import annotations

import os
import runpy
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any
from uuid import UUID

from rongmei.core.files import PROJECT_ROOT

__all__ = ["ENGINE_MODULE", "check_flow_run", "main", "refuse", "shipped_deployments"]

ENGINE_MODULE = "prefect.engine"


@lru_cache(maxsize=1)
def shipped_deployments(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Deployment name -> importable entrypoint (`flows.publish.publish`), from our prefect.yaml."""
    import yaml

    data = yaml.safe_load((root / "prefect.yaml").read_text(encoding="utf-8"))
    shipped = {}
    for deployment in data.get("deployments", []):
        path, _, function = str(deployment["entrypoint"]).partition(":")
        module = path.removesuffix(".py").replace("/", ".")
        shipped[str(deployment["name"])] = f"{module}.{function}"
    return shipped


def check_flow_run(client: Any, flow_run: Any) -> tuple[str | None, str]:
    """(why not, entrypoint): why this run must not start, or None and the entrypoint of our flow for it."""
    from prefect.utilities.importtools import import_object

    if flow_run.deployment_id is None:
        return "这个运行不是从 rongmei 的部署创建的（没有 deployment），不予执行", ""
    deployment = client.read_deployment(flow_run.deployment_id)
    flow = client.read_flow(flow_run.flow_id)
    name = f"{flow.name}/{deployment.name}"
    entrypoint = shipped_deployments().get(deployment.name)
    if entrypoint is None:
        return f"部署 {name} 不是本系统 prefect.yaml 中的部署，不予执行", ""
    ours = import_object(entrypoint)
    if getattr(ours, "name", None) != flow.name:
        return f"部署 {name} 与 prefect.yaml 中的同名部署（流程 {getattr(ours, 'name', '?')}）不符，不予执行", ""
    return None, entrypoint


def refuse(client: Any, flow_run: Any, reason: str) -> None:
    """Fail the run with the reason, and record the attempt in the ledger."""
    from prefect.states import Failed

    client.set_flow_run_state(flow_run.id, Failed(message=f"rongmei 拒绝执行：{reason}"), force=True)
    try:
        from rongmei.core.settings import load_settings
        from rongmei.storage import ledger
        from rongmei.storage.store import Store

        store = Store.from_settings(load_settings())
        with store.session() as session:
            ledger.record(session, "flow_run_refused", actor=f"prefect:flow-run/{flow_run.id}",
                          details={"reason": reason, "flow_run_name": flow_run.name,
                                   "deployment_id": str(flow_run.deployment_id or "")})
    except Exception as exc:  # the refusal stands even if the ledger cannot be reached; say so
        print(f"rongmei.runtime.launch: could not record the refusal in the ledger: {exc}", file=sys.stderr)
    print(f"rongmei.runtime.launch: refused flow run {flow_run.id}: {reason}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        flow_run_id = UUID(args[0] if args else os.environ.get("PREFECT__FLOW_RUN_ID", ""))
    except ValueError:
        print(f"Invalid flow run id. Received arguments: {args!r} (rongmei.runtime.launch: give it or set PREFECT__FLOW_RUN_ID)",
              file=sys.stderr)
        return 1
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        reason, entrypoint = check_flow_run(client, flow_run)
        if reason is not None:
            refuse(client, flow_run, reason)
            return 1
    os.environ["PREFECT__FLOW_ENTRYPOINT"] = entrypoint  # the engine loads this, not the deployment's own
    os.chdir(PROJECT_ROOT)
    sys.argv = [ENGINE_MODULE, str(flow_run_id)]
    # Running an imported module as __main__ is the point here, not the accident runpy warns about.
    warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
    try:
        runpy.run_module(ENGINE_MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `rongmei` work pool: its name and the base job template `rongmei up` creates it with.

Kept apart from `rongmei.runtime.worker` (which subclasses Prefect's worker and registers it on import) so that
`rongmei up` and the tests can read the template without registering a worker type in their own process.
"""

from __future__ import annotations

import sys
from typing import Any

from rongmei.core.files import PROJECT_ROOT

__all__ = ["WORK_POOL", "base_job_template", "flow_run_command"]

WORK_POOL = "rongmei"


def flow_run_command() -> str:
    return f"{sys.executable} -m rongmei.runtime.warmstart"


def base_job_template() -> dict[str, Any]:
    """The `rongmei` pool's template: the command and directory are fixed, and no job variable is accepted
    (`additionalProperties: false`), so the API answers 422 to a run that tries to set one."""
    return {
        "job_configuration": {
            "command": flow_run_command(),
            "env": {},
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "stream_output": True,
            "working_dir": str(PROJECT_ROOT),
        },
        "variables": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "title": "Name", "description": "Name given to the flow run process."},
                "labels": {"type": "object", "title": "Labels", "additionalProperties": {"type": "string"}},
            },
        },
    }

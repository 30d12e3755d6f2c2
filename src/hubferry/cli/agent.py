"""``hubferry agent``: the training image's entrypoint in a RunPod pod (docs/pod-agent.md)."""

from __future__ import annotations

import typer

from hubferry import logs
from hubferry.config import load_settings


def agent() -> None:
    """Run the pod agent: read the job's spec, train with trl, report to the orchestrator, publish when told.

    The orchestrator sets HUBFERRY_CALLBACK_URL, HUBFERRY_JOB_TOKEN and HUBFERRY_JOB_ID in the pod.

    HUBFERRY_AGENT_DIR is the working folder (default /workspace/hubferry, the pod volume).

    Exit codes: 0 done, 2 bad environment or spec, 1 failed, the training command's code when it failed.
    """
    settings = load_settings()
    logs.configure(quiet=False)  # a service: its log is the pod's log
    from hubferry.trainers.agent import runner

    raise typer.Exit(runner.run(settings))

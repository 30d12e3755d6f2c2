"""LLM fine-tunes on RunPod pods behind the Trainer protocol.

A pod runs ``hubferry agent`` (docs/pod-agent.md): it trains, reports over the job's callbacks and
publishes the weights itself, so the weights never pass through the orchestrator. This module only
drives pods: deploy, read, stop, resume, terminate. A handle is ``{"pod_id", "pod_name", "owner",
"job_id", "gpu", "cloud_type", "price_per_hr", "launched_at", "web_url"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hubferry.config import Settings
from hubferry.domain.jobs import HANDLE_OUTLIVES_TRAINING, Job
from hubferry.errors import PermanentError
from hubferry.logs import get_logger
from hubferry.trainers.base import Capabilities, Handle, Observation, RunStatus
from hubferry.trainers.runpod_api import RunpodApi

log = get_logger(__name__)
#: Every pod hubferry deploys is named ``hubferry-{job id}``: how the reconciler finds its orphans.
POD_PREFIX = "hubferry-"
#: Pod states in which the container may still run.
_ALIVE = ("CREATED", "RUNNING", "RESTARTING")


def pod_name(job_id: str) -> str:
    return f"{POD_PREFIX}{job_id}"


def hourly_price(gpu: Mapping[str, Any], cloud_type: str) -> float | None:
    """The on-demand price per hour of one GPU of this type in this cloud, as RunPod lists it."""
    key = {"SECURE": "securePrice", "COMMUNITY": "communityPrice"}.get(cloud_type)
    price = gpu.get(key) if key else (gpu.get("lowestPrice") or {}).get("uninterruptablePrice")
    return float(price) if isinstance(price, int | float) and price > 0 else None


class RunpodTrainer:
    """Deploys and follows pods; ``api_for(owner, job_id)`` gives a client with the job's RunPod key."""

    kind = "runpod"
    capabilities = Capabilities(can_retry_training=True, pushes_events=True, publishes_from_run=True)

    def __init__(self, settings: Settings, api_for: Callable[[str, str], RunpodApi]) -> None:
        self.settings = settings
        self.api_for = api_for

    def _api(self, handle: Handle) -> RunpodApi:
        return self.api_for(str(handle["owner"]), str(handle["job_id"]))

    def start(self, job: Job, log_path: Path, secrets: Mapping[str, str] | None = None) -> Handle:
        """Deploy the job's pod with the agent's environment (``secrets`` are the per-job callback token and,
        with ``--token-in-env``, the Hub token)."""
        params = job.params
        base = str(self.settings.public_url or "").rstrip("/")
        env = {"HUBFERRY_CALLBACK_URL": f"{base}/api/v1/agent/jobs/{job.id}", "HUBFERRY_JOB_ID": job.id,
               **dict(secrets or {})}
        api = self.api_for(job.owner, job.id)
        pod = api.create_pod(name=pod_name(job.id), image=str(params["image"]), gpu=str(params["gpu"]),
                             cloud_type=str(params["cloud_type"]), env=env,
                             container_disk_gb=self.settings.runpod_container_disk_gb,
                             volume_gb=self.settings.runpod_volume_gb)
        pod_id = str(pod["id"])
        log.info("pod deployed", job_id=job.id, pod_id=pod_id, gpu=params["gpu"])
        return {"pod_id": pod_id, "pod_name": pod_name(job.id), "owner": job.owner, "job_id": job.id,
                "gpu": params["gpu"], "cloud_type": params["cloud_type"], "price_per_hr": params.get("price_per_hr"),
                "launched_at": datetime.now(UTC).isoformat(), "web_url": f"https://www.runpod.io/console/pods/{pod_id}",
                HANDLE_OUTLIVES_TRAINING: True}  # the pod publishes after training, and is released after that

    def poll(self, handle: Handle, cursor: str = "") -> Observation:
        """The pod's state; its log arrives through the agent's reports, not here."""
        pod = self._api(handle).get_pod(str(handle["pod_id"]))
        if pod is None:
            return Observation(RunStatus.LOST, cursor=cursor, message=f"pod {handle['pod_id']} no longer exists "
                               "(terminated outside hubferry)")
        status = str(pod.get("desiredStatus") or "")
        hints = {"pod_status": status, "container_up": pod.get("runtime") is not None,
                 "cost_per_hr": pod.get("costPerHr"), "uptime_s": pod.get("uptimeSeconds")}
        if status in _ALIVE:
            return Observation(RunStatus.RUNNING, cursor=cursor, hints=hints)
        return Observation(RunStatus.FAILED if status == "DEAD" else RunStatus.LOST, cursor=cursor, hints=hints,
                           message=f"pod {handle['pod_id']} is {status.lower() or 'in an unknown state'}")

    def cancel(self, handle: Handle, grace_s: float) -> None:
        """Terminate the pod at once (the agent gets no grace: a terminated pod bills nothing more)."""
        self.release(handle, keep_outputs=False)

    def fetch_outputs(self, handle: Handle, dest: Path) -> Path:
        raise PermanentError("a RunPod job's weights stay in its pod, which publishes them itself",
                             category="internal", hint="`hubferry retry JOB` asks the pod to publish again")

    def release(self, handle: Handle, *, keep_outputs: bool) -> None:
        """The run is over: terminate the pod, or only stop it when its weights must be kept (its volume
        survives a stop). A pod already gone is not an error."""
        api, pod_id = self._api(handle), str(handle["pod_id"])
        pod = api.get_pod(pod_id)
        if pod is None:
            return
        if keep_outputs:
            if pod.get("desiredStatus") in _ALIVE:
                api.stop_pod(pod_id)
            log.info("pod stopped; its volume keeps the weights", pod_id=pod_id)
        else:
            api.terminate_pod(pod_id)
            log.info("pod terminated", pod_id=pod_id)

    def resume(self, handle: Handle) -> bool:
        """Start a stopped pod again (its agent finds the trained weights and publishes them); False when the
        pod runs already. Raises PermanentError when the pod is gone."""
        api, pod_id = self._api(handle), str(handle["pod_id"])
        pod = api.get_pod(pod_id)
        if pod is None:
            raise PermanentError(f"pod {pod_id} no longer exists, and its weights with it", category="training_error",
                                 hint="`hubferry retry JOB` after this failure trains again on a new pod")
        if pod.get("desiredStatus") in _ALIVE:
            return False
        api.resume_pod(pod_id, 1)
        return True

    def list_runs(self, owner: str, job_id: str) -> list[dict[str, Any]]:
        """Every pod hubferry deployed on the account of ``owner``'s key (named ``hubferry-{job id}``), with
        the ``job_id`` its name gives."""
        return [{**p, "job_id": str(p["name"])[len(POD_PREFIX):]} for p in self.api_for(owner, job_id).list_pods()
                if str(p.get("name", "")).startswith(POD_PREFIX)]

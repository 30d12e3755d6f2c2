"""A fake RunPod GraphQL API whose pods are real local processes, for the official ``runpod`` 1.12.0 client.

Typical use (or the ``runpod_fake`` fixture of ``fakes.runpod_fixtures``)::

    with running_fake_runpod(tmp_path) as fake:
        fake.images["*hubferry*"] = [sys.executable, "-m", "hubferry", "agent"]
        monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)
        runpod.api_key = fake.api_key
        pod = runpod.create_pod("job-1", "ghcr.io/me/hubferry:1", "NVIDIA RTX A4000", cloud_type="SECURE")
        fake.wait_for(pod["id"], "EXITED")

``POST /graphql`` is parsed, validated and executed by graphql-core against :mod:`fakes.runpod_schema`,
so the client's exact texts go through a real GraphQL engine: a ``"`` in an env value is a syntax error
(HTTP 400), as on api.runpod.io. A deployed pod launches the argv that ``images`` maps its image to, in
its own process group, with a per-pod volume folder that survives stop/resume; everything the process
starts counts as the pod's "container" and dies with it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from graphql import GraphQLError

from fakes.runpod_schema import answer_graphql, peek
from fakes.serving import bound_socket, serve_in_thread

#: The key of the account every fake starts with.
DEFAULT_API_KEY = "rpa_FAKE0DEFAULT0ACCOUNT0KEY0000000000000000"
#: RunPod's own words when no machine matches a deploy.
CAPACITY_MESSAGE = ("There are no longer any instances available with the requested specifications. "
                    "Please refresh and try again.")
#: RunPod's words (from user reports) when a stopped pod's machine has no free GPU left for a resume.
RESUME_CAPACITY_MESSAGE = "There are not enough free GPUs on the host machine to start this pod."
#: Seconds between SIGTERM and SIGKILL on ``podStop`` (RunPod, like ``docker stop``, waits a little).
STOP_GRACE_S = 5.0
#: How often the monitor thread looks for exited processes and due launches.
TICK_S = 0.02
#: How often it records the processes each pod's process started (its "container").
MEMBER_SCAN_S = 0.2
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _status_time() -> str:
    """``lastStatusChange`` time text, as RunPod writes it (JavaScript ``Date.toString()``)."""
    return time.strftime("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)", time.gmtime())


@dataclass
class GpuOffer:
    """One GPU type of the catalog; tests may change any field (prices, clouds, ``max_gpu_count``)."""

    id: str
    display_name: str
    memory_in_gb: int
    secure_price: float
    community_price: float
    secure_cloud: bool = True
    community_cloud: bool = True
    max_gpu_count: int = 8
    manufacturer: str = "Nvidia"
    cuda_cores: int = 0

    def price(self, cloud: str) -> float:
        return self.secure_price if cloud == "SECURE" else self.community_price


def default_catalog() -> dict[str, GpuOffer]:
    offers = [
        GpuOffer("NVIDIA A100 80GB PCIe", "A100 80GB", 80, 1.64, 1.19, cuda_cores=6912),
        GpuOffer("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, 2.69, cuda_cores=16896),
        GpuOffer("NVIDIA RTX A4000", "RTX A4000", 16, 0.32, 0.17, cuda_cores=6144),
        GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34, cuda_cores=16384),
    ]
    return {offer.id: offer for offer in offers}


@dataclass
class Account:
    key: str
    id: str
    pub_key: str = ""
    network_volumes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class GraphQLCall:
    """One ``POST /graphql`` the fake answered."""

    #: The document's operation name (``pod``, ``myPods``, ``GpuTypes``; ``None`` for the client's mutations).
    operation: str | None
    #: Its root fields (``podFindAndDeployOnDemand``, ``podStop``...); empty when the text did not parse.
    fields: tuple[str, ...]
    #: The Bearer key sent, ``None`` without one (fake keys only: nothing secret here).
    key: str | None
    status: int
    #: Answered by ``fail_next`` instead of the API.
    injected: bool


@dataclass
class FakePod:
    """A pod and its local process; read by tests, changed only by the fake."""

    id: str
    account: Account
    name: str
    image_name: str
    cloud_type: str  # SECURE or COMMUNITY (ALL is resolved at deploy), CPU for deployCpuPod
    gpu_type_id: str | None
    gpu_count: int
    env: list[tuple[str, str]]
    cost_per_hr: float
    container_disk_in_gb: int | None
    volume_in_gb: int | None
    volume_mount_path: str | None
    docker_args: str | None
    ports: str | None
    volume: Path
    log_path: Path
    container_dir: Path
    pod_key: str
    machine_id: str = field(default_factory=lambda: _random_id(12))
    data_center_id: str = "EU-RO-1"
    desired_status: str = "RUNNING"
    last_status_change: str = field(default_factory=lambda: f"Rented by User: {_status_time()}")
    #: What happened, in order ("launched: ...", "image pull failed: ...", "exited with code 0", ...).
    events: list[str] = field(default_factory=list)
    launches: int = 0
    #: The exit code of the last launch (negative: killed by that signal); ``None`` while it runs.
    exit_code: int | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float | None = None  # monotonic, while the process runs (the pod has a runtime)
    launch_at: float | None = None  # monotonic, when a delayed launch is due
    #: A stop or terminate is still ending the process (the API already says EXITED / gone).
    stopping: bool = False
    members: dict[int, psutil.Process] = field(default_factory=dict)
    members_scanned: float = 0.0
    #: The environment of the last launch.
    launch_env: dict[str, str] = field(default_factory=dict)

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def pod_host_id(self) -> str:
        return f"{self.id}-{int(self.machine_id, 36) % 10**8:08d}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class FakeRunPod:
    """The fake's state and its test hooks; every method is safe to call from any thread."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url.rstrip("/")
        self.root = root
        self.api_key = DEFAULT_API_KEY
        #: The GPU catalog ``gpuTypes`` answers from; edit or add offers freely.
        self.gpus = default_catalog()
        #: Image name (exact, or a glob such as ``*hubferry*``) → argv a pod of that image runs.
        self.images: dict[str, list[str]] = {}
        #: Added to every launched process's environment (``HUBFERRY_HOME``...), under the pod's own env.
        self.base_env: dict[str, str] = {}
        #: Seconds between a deploy/resume and the process start (``runtime`` stays null meanwhile).
        self.launch_delay_s = 0.0
        self.stop_grace_s = STOP_GRACE_S
        self.pods: dict[str, FakePod] = {}
        self.requests: list[GraphQLCall] = []
        self._lock = threading.RLock()
        self._keys: dict[str, Account] = {}
        self._capacity: dict[tuple[str, str], bool] = {}
        self._faults: list[tuple[int, bytes, str]] = []
        self.default_account = self.add_account(DEFAULT_API_KEY)
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="fake-runpod-monitor", daemon=True)
        self._monitor.start()

    # -- test hooks ----------------------------------------------------------------------------

    def add_account(self, key: str | None = None) -> Account:
        """A new account (its own pods) answering to ``key`` (a fresh fake key by default)."""
        key = key or "rpa_FAKE" + _random_id(36).upper()
        with self._lock:
            if key in self._keys:
                raise ValueError("that key already belongs to an account of the fake")
            account = Account(key=key, id=f"user_{_random_id(20)}", pub_key=f"ssh-ed25519 AAAAfake{_random_id(16)}")
            self._keys[key] = account
            return account

    def set_capacity(self, gpu_type_id: str, cloud_type: str, available: bool) -> None:
        """Whether deploys (and resumes) of ``gpu_type_id`` on ``cloud_type`` (SECURE or COMMUNITY) find a machine."""
        if cloud_type not in ("SECURE", "COMMUNITY"):
            raise ValueError(f"cloud_type must be SECURE or COMMUNITY, not {cloud_type!r}")
        with self._lock:
            self._capacity[(gpu_type_id, cloud_type)] = available

    def fail_next(self, count: int, status: int = 502, body: str = "<html>Bad gateway</html>",
                  content_type: str = "text/html") -> None:
        """Answer the next ``count`` ``POST /graphql`` with this raw response instead of the API."""
        with self._lock:
            self._faults += [(status, body.encode(), content_type)] * count

    def kill_process(self, pod_id: str) -> None:
        """SIGKILL the pod's process (and everything it started), as a crash; the pod becomes EXITED."""
        with self._lock:
            pod = self.pods[pod_id]
            process = pod.process
            members = self._scan_members(pod)
        if process is None:
            raise RuntimeError(f"pod {pod_id} has no running process to kill")
        _signal_container(process, members, signal.SIGKILL)
        process.wait()
        self.refresh()

    def wait_for(self, pod_id: str, status: str, *, runtime: bool | None = None, timeout: float = 10.0) -> FakePod:
        """Wait until the pod's ``desiredStatus`` is ``status`` (and its runtime is up, or not, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            with self._lock:
                pod = self.pods[pod_id]
                up = pod.started_at is not None
                if pod.desired_status == status and not pod.stopping and (runtime is None or up == runtime):
                    return pod
                seen = (pod.desired_status, pod.started_at is not None)
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {pod_id} is {seen[0]} (runtime up: {seen[1]}), not {status}; "
                                   f"log {pod.log_path}:\n{pod.log_text()[-2000:]}")
            time.sleep(TICK_S)

    def calls(self, field_name: str | None = None, key: str | None = None) -> int:
        """How many requests named this root field (and used this key), injected answers included."""
        with self._lock:
            return sum(1 for c in self.requests
                       if (field_name is None or field_name in c.fields) and (key is None or c.key == key))

    def close(self) -> None:
        """Stop the monitor and kill every process a pod still runs."""
        self._stop.set()
        self._monitor.join(timeout=10)
        with self._lock:
            running = [(pod.process, self._scan_members(pod)) for pod in self.pods.values() if pod.process]
            for pod in self.pods.values():
                pod.process = None
        for process, members in running:
            if process is not None:
                _signal_container(process, members, signal.SIGKILL)
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)

    # -- state used by the HTTP side -----------------------------------------------------------

    def account_for(self, authorization: str | None) -> tuple[str | None, Account | None]:
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None, None
        with self._lock:
            return key, self._keys.get(key)

    def take_fault(self) -> tuple[int, bytes, str] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def record(self, call: GraphQLCall) -> None:
        with self._lock:
            self.requests.append(call)

    def refresh(self) -> None:
        """Bring every pod up to date now: exited processes, due launches."""
        with self._lock:
            now = time.monotonic()
            for pod in self.pods.values():
                self._step(pod, now)

    def visible(self, account: Account, pod_id: str) -> FakePod | None:
        with self._lock:
            pod = self.pods.get(pod_id)
            ok = pod is not None and pod.account is account and pod.desired_status != "TERMINATED"
            return pod if ok else None

    def visible_pods(self, account: Account) -> list[FakePod]:
        with self._lock:
            return [p for p in self.pods.values() if p.account is account and p.desired_status != "TERMINATED"]

    def offers(self, gpu_type_id: str | None) -> list[GpuOffer]:
        """The catalog, or the one offer with that id (none for an unknown id)."""
        with self._lock:
            return [o for o in self.gpus.values() if gpu_type_id is None or o.id == gpu_type_id]

    def owned(self, account: Account, pod_id: str) -> FakePod:
        pod = self.visible(account, pod_id)
        if pod is None:
            raise GraphQLError(f"Pod not found: {pod_id}")  # the same for another account's pod
        return pod

    def deploy(self, account: Account, spec: dict[str, Any], gpu: bool) -> FakePod:
        """Create a pod from a ``podFindAndDeployOnDemand`` / ``deployCpuPod`` input and start it."""
        with self._lock:
            cloud, gpu_type_id, gpu_count, price = "CPU", None, 0, 0.06
            if gpu:
                gpu_type_id = spec.get("gpuTypeId")
                gpu_count = spec.get("gpuCount") or 1
                offer = self.gpus.get(gpu_type_id or "")
                clouds = [c for c in ("SECURE", "COMMUNITY") if spec.get("cloudType", "ALL") in ("ALL", c)]
                found = [c for c in clouds if offer is not None and self._available(offer, c, gpu_count)]
                if offer is None or not found:
                    raise GraphQLError(CAPACITY_MESSAGE)
                cloud, price = found[0], round(offer.price(found[0]) * gpu_count, 4)
            env = [(item["key"], item["value"]) for item in spec.get("env") or []]
            for key, value in env:
                if not key or "=" in key or "\0" in key + value:
                    raise GraphQLError(f"env: {key!r} cannot be an environment variable (empty, '=' or NUL); "
                                       "rename it")
            pod_id = _random_id(14)
            pod = FakePod(
                id=pod_id, account=account, name=spec.get("name") or "", image_name=spec.get("imageName") or "",
                cloud_type=cloud, gpu_type_id=gpu_type_id, gpu_count=gpu_count, env=env, cost_per_hr=price,
                container_disk_in_gb=spec.get("containerDiskInGb"), volume_in_gb=spec.get("volumeInGb"),
                volume_mount_path=spec.get("volumeMountPath"), docker_args=spec.get("dockerArgs"),
                ports=spec.get("ports"), volume=self.root / pod_id, log_path=self.root / f"{pod_id}.log",
                container_dir=self.root / f"{pod_id}.container", pod_key="rpa_POD" + _random_id(36).upper(),
                data_center_id=spec.get("dataCenterId") or "EU-RO-1",
            )  # fmt: skip
            pod.volume.mkdir(parents=True)
            self.pods[pod_id] = pod
            self._keys[pod.pod_key] = account
            self._schedule(pod)
            return pod

    def stop(self, account: Account, pod_id: str) -> FakePod:
        """SIGTERM the pod's process group, SIGKILL what is left after the grace; the pod is EXITED."""
        with self._lock:
            pod = self.owned(account, pod_id)
            process, members = pod.process, self._scan_members(pod)
            pod.process, pod.started_at, pod.launch_at, pod.stopping = None, None, None, process is not None
            if pod.desired_status != "EXITED":
                pod.desired_status, pod.last_status_change = "EXITED", f"Stopped by User: {_status_time()}"
        if process is not None:
            code = _end_container(process, members, self.stop_grace_s)
            with self._lock:
                pod.exit_code, pod.stopping = code, False
                pod.events.append(f"stopped by user (exit code {code})")
        return pod

    def resume(self, account: Account, pod_id: str, gpu_count: int) -> FakePod:
        with self._lock:
            pod = self.owned(account, pod_id)
            if pod.desired_status == "RUNNING":
                return pod
            if pod.stopping:
                raise GraphQLError("This pod is still stopping; resume it once it has stopped.")
            offer = self.gpus.get(pod.gpu_type_id or "")
            if pod.gpu_type_id is not None and (offer is None or not self._available(offer, pod.cloud_type, gpu_count)):
                raise GraphQLError(RESUME_CAPACITY_MESSAGE)
            if pod.gpu_type_id is not None:
                pod.gpu_count = gpu_count
            pod.desired_status, pod.last_status_change = "RUNNING", f"Resumed by User: {_status_time()}"
            self._schedule(pod)
            return pod

    def terminate(self, account: Account, pod_id: str) -> None:
        """Kill the pod's processes, delete its volume; the pod is gone from the API (kept in ``pods``)."""
        with self._lock:
            pod = self.owned(account, pod_id)
            process, members = pod.process, self._scan_members(pod)
            pod.process, pod.started_at, pod.launch_at, pod.stopping = None, None, None, True
            pod.desired_status, pod.last_status_change = "TERMINATED", f"Terminated by User: {_status_time()}"
            self._keys.pop(pod.pod_key, None)
        if process is not None:
            _signal_container(process, members, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                pod.exit_code = process.wait(timeout=5)
        shutil.rmtree(pod.volume, ignore_errors=True)
        shutil.rmtree(pod.container_dir, ignore_errors=True)
        with self._lock:
            pod.stopping = False
            pod.events.append("terminated")

    def pod_json(self, pod: FakePod) -> dict[str, Any]:
        uptime = int(time.monotonic() - pod.started_at) if pod.started_at is not None else 0
        offer = self.gpus.get(pod.gpu_type_id or "")
        runtime = None
        if pod.started_at is not None:
            runtime = {"uptimeInSeconds": uptime, "ports": _runtime_ports(pod.ports, pod.id)}
        return {
            "id": pod.id, "containerDiskInGb": pod.container_disk_in_gb, "costPerHr": pod.cost_per_hr,
            "desiredStatus": pod.desired_status, "dockerArgs": pod.docker_args, "dockerId": None,
            "env": [f"{k}={v}" for k, v in pod.env], "gpuCount": pod.gpu_count, "imageName": pod.image_name,
            "lastStatusChange": pod.last_status_change, "machineId": pod.machine_id,
            "memoryInGb": 62.0 * max(pod.gpu_count, 1), "name": pod.name, "podType": "RESERVED", "port": None,
            "ports": pod.ports, "uptimeSeconds": uptime, "vcpuCount": 8.0 * max(pod.gpu_count, 1),
            "volumeInGb": pod.volume_in_gb, "volumeMountPath": pod.volume_mount_path, "runtime": runtime,
            "machine": {"gpuDisplayName": offer.display_name if offer else None, "podHostId": pod.pod_host_id},
        }  # fmt: skip

    def gpu_json(self, offer: GpuOffer) -> dict[str, Any]:
        def lowest_price(_info: Any, **args: Any) -> dict[str, float | None]:
            count = (args.get("input") or {}).get("gpuCount") or 1
            prices = [offer.price(c) for c in ("SECURE", "COMMUNITY") if self._available(offer, c, count)]
            return {"uninterruptablePrice": min(prices) if prices else None,
                    "minimumBidPrice": round(min(prices) * 0.6, 3) if prices else None}

        return {
            "id": offer.id, "displayName": offer.display_name, "manufacturer": offer.manufacturer,
            "memoryInGb": offer.memory_in_gb, "cudaCores": offer.cuda_cores, "maxGpuCount": offer.max_gpu_count,
            "secureCloud": offer.secure_cloud, "communityCloud": offer.community_cloud,
            "securePrice": offer.secure_price, "communityPrice": offer.community_price,
            "oneMonthPrice": None, "threeMonthPrice": None, "oneWeekPrice": None,
            "secureSpotPrice": round(offer.secure_price * 0.6, 3), "communitySpotPrice":
            round(offer.community_price * 0.6, 3), "lowestPrice": lowest_price,
        }  # fmt: skip

    # -- processes -----------------------------------------------------------------------------

    def _available(self, offer: GpuOffer, cloud: str, count: int) -> bool:
        listed = offer.secure_cloud if cloud == "SECURE" else offer.community_cloud
        return listed and count <= offer.max_gpu_count and self._capacity.get((offer.id, cloud), True)

    def _argv(self, image_name: str) -> list[str] | None:
        if image_name in self.images:
            return list(self.images[image_name])
        for pattern, argv in self.images.items():
            if fnmatch.fnmatchcase(image_name, pattern):
                return list(argv)
        return None

    def _schedule(self, pod: FakePod) -> None:
        pod.launch_at = time.monotonic() + self.launch_delay_s
        if self.launch_delay_s <= 0:
            self._launch(pod)

    def _launch(self, pod: FakePod) -> None:
        pod.launch_at = None
        argv = self._argv(pod.image_name)
        if argv is None:
            pod.events.append(f"image pull failed: no argv in fake.images for {pod.image_name!r}")
            return
        shutil.rmtree(pod.container_dir, ignore_errors=True)  # a container's own disk does not survive a stop
        pod.container_dir.mkdir(parents=True)
        env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH") if k in os.environ}
        env.update(self.base_env)
        env.update(pod.env)
        env.update({
            "RUNPOD_POD_ID": pod.id, "RUNPOD_API_KEY": pod.pod_key, "RUNPOD_GPU_COUNT": str(pod.gpu_count),
            "RUNPOD_CPU_COUNT": str(8 * max(pod.gpu_count, 1)), "RUNPOD_DC_ID": pod.data_center_id,
            "RUNPOD_POD_HOSTNAME": pod.pod_host_id, "HUBFERRY_AGENT_DIR": str(pod.volume),
        })  # fmt: skip
        pod.launch_env = env
        with open(pod.log_path, "ab") as log:
            log.write(f"[fake-runpod] launch {pod.launches + 1}: {argv}\n".encode())
            log.flush()
            try:
                pod.process = subprocess.Popen(argv, env=env, cwd=pod.container_dir, stdin=subprocess.DEVNULL,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except (OSError, ValueError) as exc:
                log.write(f"[fake-runpod] container start failed: {exc}\n".encode())
                pod.events.append(f"container start failed: {exc}")
                pod.exit_code, pod.desired_status = 127, "EXITED"
                return
        pod.launches += 1
        pod.exit_code, pod.started_at, pod.members, pod.members_scanned = None, time.monotonic(), {}, 0.0
        pod.events.append(f"launched: {argv}")

    def _step(self, pod: FakePod, now: float) -> None:
        if pod.desired_status == "RUNNING" and pod.process is None and pod.launch_at is not None \
                and now >= pod.launch_at:
            self._launch(pod)
        process = pod.process
        if process is None:
            return
        code = process.poll()
        if code is None:
            if now - pod.members_scanned >= MEMBER_SCAN_S:
                self._scan_members(pod)
            return
        # The container's main process ended: the container (everything it started) ends with it.
        _signal_container(process, pod.members, signal.SIGKILL)
        pod.process, pod.started_at, pod.exit_code = None, None, code
        pod.desired_status, pod.last_status_change = "EXITED", f"Exited by container: {_status_time()}"
        pod.events.append(f"exited with code {code}")

    def _scan_members(self, pod: FakePod) -> list[psutil.Process]:
        """Remember every process the pod's process started (they may leave its group or be orphaned)."""
        pod.members_scanned = time.monotonic()
        if pod.process is not None:
            with suppress(psutil.Error):
                for child in psutil.Process(pod.process.pid).children(recursive=True):
                    pod.members.setdefault(child.pid, child)
        return list(pod.members.values())

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S):
            self.refresh()


def _signal_container(process: subprocess.Popen[bytes], members: Any, sig: signal.Signals) -> None:
    """Signal the process group and every remembered member; after SIGKILL, wait (1 s at most) until they are gone."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    alive = list(members.values() if isinstance(members, dict) else members)
    for member in alive:
        with suppress(psutil.Error):
            member.send_signal(sig)  # psutil checks the pid still is that process
    deadline = time.monotonic() + 1.0
    while sig == signal.SIGKILL and any(_alive(m) for m in alive) and time.monotonic() < deadline:
        time.sleep(0.005)


def _alive(process: psutil.Process) -> bool:
    """Running, not a zombie (an orphan's zombie waits for a PID 1 that may never reap it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _end_container(process: subprocess.Popen[bytes], members: list[psutil.Process], grace_s: float) -> int:
    """SIGTERM the group, then SIGKILL the group and every member once ``grace_s`` has passed."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_container(process, members, signal.SIGKILL)
        code = process.wait()
    _signal_container(process, members, signal.SIGKILL)
    return code


def _runtime_ports(ports: str | None, pod_id: str) -> list[dict[str, Any]]:
    """``runtime.ports`` for ``"8888/http,22/tcp"``: HTTP behind RunPod's proxy, TCP on a public port."""
    answer = []
    for index, spec in enumerate(p for p in (ports or "").split(",") if p):
        port, _, kind = spec.partition("/")
        if not port.isdigit():
            continue
        public = kind == "tcp"
        answer.append({"ip": "194.68.245.12" if public else "100.65.0.101", "isIpPublic": public,
                       "privatePort": int(port), "publicPort": 40000 + (hash(pod_id) + index) % 20000 if public
                       else int(port), "type": kind or "http"})
    return answer


def create_app(fake: FakeRunPod) -> Any:
    """The ASGI app: ``POST /graphql`` only, Bearer keys, injected faults first."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def graphql_endpoint(request: Request) -> Response:
        key, account = fake.account_for(request.headers.get("authorization"))
        raw = await request.body()
        fault = fake.take_fault()
        if fault is not None:
            status, content, content_type = fault
            fake.record(GraphQLCall(*peek(raw), key, status, True))
            return Response(content, status_code=status, media_type=content_type)
        if account is None:
            fake.record(GraphQLCall(*peek(raw), key, 401, False))
            message = "Unauthorized: an API key is missing from the Authorization header" if key is None \
                else "Unauthorized: the API key is not valid"
            return JSONResponse({"errors": [{"message": message}]}, status_code=401)
        try:
            body = json.loads(raw)
        except ValueError:
            fake.record(GraphQLCall(None, (), key, 400, False))
            return JSONResponse({"errors": [{"message": "POST body sent invalid JSON."}]}, status_code=400)
        status, answer, name, fields = await run_in_threadpool(answer_graphql, fake, account, body)
        fake.record(GraphQLCall(name, fields, key, status, False))
        return JSONResponse(answer, status_code=status)

    return Starlette(routes=[Route("/graphql", graphql_endpoint, methods=["POST"])])


@contextmanager
def running_fake_runpod(root: Path) -> Iterator[FakeRunPod]:
    """Serve a fresh :class:`FakeRunPod` (pod folders under ``root``) with uvicorn on a free 127.0.0.1 port."""
    sock, url = bound_socket()
    root.mkdir(parents=True, exist_ok=True)
    fake = FakeRunPod(url, root)
    try:
        with serve_in_thread(create_app(fake), sock, name=f"fake-runpod:{url}", lifespan="off"):
            yield fake
    finally:
        fake.close()

"""Publishing benchmark: ``hubferry push`` against raw ``HfApi.upload_folder`` and the floor, on one registry.

It checks the speed and memory targets of publishing (hubferry at most 0.90x the wall time of raw
``upload_folder``, peak RSS at most 300 MB) by measuring all three in the same run, on the same
machine, so the ratios hold even where absolute numbers are noisy. It reports; it never gates CI.

Every measured run publishes FRESH random content, written just before it (outside the timing) for
that run and that method alone: the registry deduplicates by sha256, so bytes another run already
sent would be skipped and make a contender look faster than it is. Each run also gets a fresh
``hubferry hub serve`` process with an empty data dir, in its own process, so its memory and CPU
are not the client's. Each client runs in a fresh subprocess; its peak RSS is the kernel's
high-water mark for that child (see :class:`PeakRss`).

The floor is one child that sha256-hashes every byte, then sends all of them in one raw HTTP PUT
(``http.client``, streamed from the files). By default the PUT goes to a presigned URL from the
registry's LFS batch API, for one object made of all files concatenated, so the registry does the
same work (hash, write, fsync) as for the other two methods. ``--floor-target sink`` sends it instead
to a stdlib server in this process that reads and discards the body: the cost of the client alone.

Usage::

    .venv/bin/python bench/publish.py                    # 2 GiB in 4 files, 2 repeats
    .venv/bin/python bench/publish.py --size-gib 1 --files 8 --repeat 3
    .venv/bin/python bench/publish.py --size-gib 0.25 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from hubferry import testing

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Default place for the data set and the registries' data dirs (git-ignored).
DEFAULT_WORK = REPO_ROOT / "bench" / ".work"

#: hubferry may take at most this multiple of raw upload_folder's wall time (median of per-repeat ratios).
TARGET_RATIO = 0.90
#: hubferry's peak RSS may not exceed this many MB (10^6 bytes), on any run.
TARGET_RSS_MB = 300.0

GiB = 1024**3
MB = 1_000_000
#: Size of each os.urandom call while writing the data set.
WRITE_CHUNK = 8 * 1024 * 1024
#: Token user, and so the namespace of every benchmark repo.
USER = "bench"

METHODS = ("hubferry", "raw_upload_folder", "floor")
#: Variables that would point the children at another Hub, token or transfer than this run's.
OVERRIDING = ("HUBFERRY_ENDPOINT", "HUBFERRY_TOKEN", "HUBFERRY_XET")

# Runs in a child: plain huggingface_hub, as a user without hubferry would publish the folder.
RAW_CHILD = """
import json, os, sys
from huggingface_hub import HfApi
repo_id, folder = sys.argv[1], sys.argv[2]
api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ["HF_TOKEN"])
api.create_repo(repo_id, private=True, exist_ok=True)
info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="raw upload_folder")
print(json.dumps({"commit": info.oid}))
"""

# Runs in a child: one sha256 pass over every byte, then one streamed PUT of all of them.
FLOOR_CHILD = """
import hashlib, http.client, json, os, sys, urllib.parse, urllib.request
folder, target = sys.argv[1], sys.argv[2]
CHUNK = 8 * 1024 * 1024
paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
size = sum(os.path.getsize(p) for p in paths)
buffer = bytearray(CHUNK)
view = memoryview(buffer)

def chunks():
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                yield view[:n]

digest = hashlib.sha256()
for chunk in chunks():
    digest.update(chunk)
oid = digest.hexdigest()
if target == "registry":
    endpoint, token, repo_id = os.environ["HF_ENDPOINT"], os.environ["HF_TOKEN"], sys.argv[3]
    body = {"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
            "objects": [{"oid": oid, "size": size}]}
    request = urllib.request.Request(
        f"{endpoint}/{repo_id}.git/info/lfs/objects/batch", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.git-lfs+json",
                 "Content-Type": "application/vnd.git-lfs+json"})
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)["objects"][0]
    url = answer["actions"]["upload"]["href"]
else:
    url = target
parts = urllib.parse.urlsplit(url)
connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
connection.putrequest("PUT", parts.path + ("?" + parts.query if parts.query else ""))
connection.putheader("Content-Length", str(size))
connection.putheader("Content-Type", "application/octet-stream")
connection.endheaders()
for chunk in chunks():
    connection.send(chunk)
response = connection.getresponse()
response.read()
if response.status != 200:
    sys.exit(f"PUT answered {response.status}")
print(json.dumps({"oid": oid, "size": size}))
"""


# -- the data set ------------------------------------------------------------------------------------


def make_dataset(folder: Path, size_bytes: int, files: int) -> int:
    """Write ``files`` random weight files totalling ``size_bytes``, a config.json and a README.md."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file, remainder = divmod(size_bytes, files)
    for number in range(files):
        left = per_file + (1 if number < remainder else 0)
        with open(folder / f"model-{number + 1:05d}-of-{files:05d}.safetensors", "wb") as f:
            while left > 0:
                chunk = os.urandom(min(WRITE_CHUNK, left))
                f.write(chunk)
                left -= len(chunk)
    config = {"architectures": ["BenchModel"], "hidden_size": 4096, "num_hidden_layers": 32, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n\n# Benchmark model\n\nRandom bytes.\n"
    )
    return sum(p.stat().st_size for p in folder.iterdir())


# -- servers -----------------------------------------------------------------------------------------


@dataclass
class Registry:
    endpoint: str
    token: str
    process: psutil.Process
    data_dir: Path


@dataclass(frozen=True)
class Cpus:
    """Which CPUs the registry and the measured client may run on (None: anywhere).

    The registry stands in for a remote Hub, which never competes with the client for CPU. On a
    small machine sharing cores, the server's CPU and the client's CPU would trade off against each
    other, and what is measured would be the sum of both, not the time a user waits on a real Hub.
    """

    server: frozenset[int] | None = None
    client: frozenset[int] | None = None

    @classmethod
    def split(cls) -> Cpus:
        """The first half of this process's CPUs for the server, the rest for the client."""
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) < 2:
            return cls()
        half = len(cpus) // 2
        return cls(frozenset(cpus[:half]), frozenset(cpus[half:]))

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned"
        return f"registry on CPU {sorted(self.server)}, client on CPU {sorted(self.client)}"


@contextlib.contextmanager
def _affinity(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the block with this process pinned to ``cpus``: processes it starts inherit them."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def registry(data_dir: Path, log_path: Path, cpus: Cpus = Cpus(), **settings: int) -> Iterator[Registry]:
    """A ``hubferry hub serve`` process on an empty ``data_dir`` (on ``cpus.server``), with a write
    token; removed afterwards."""
    data_dir.mkdir(parents=True)
    try:
        with contextlib.ExitStack() as stack:
            with _affinity(cpus.server):  # the server process and every thread it starts inherit the CPUs
                hub = stack.enter_context(testing.registry_process(data_dir, log_path=log_path, **settings))
            yield Registry(hub.endpoint, hub.create_token(USER), psutil.Process(hub.pid), data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


class _SinkHandler(BaseHTTPRequestHandler):
    """Reads a PUT body and throws it away."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        left = int(self.headers.get("Content-Length", "0"))
        while left > 0:
            chunk = self.rfile.read(min(left, 1024 * 1024))
            if not chunk:
                break
            left -= len(chunk)
        self.send_response(200 if left == 0 else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # silence the per-request log line


@contextlib.contextmanager
def sink() -> Iterator[str]:
    """A local HTTP server that accepts any PUT and discards the body; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
    thread = threading.Thread(target=server.serve_forever, name="bench-sink", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sink"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Run:
    method: str
    repeat: int
    wall_s: float
    peak_rss_mb: float
    #: user + system CPU seconds of the client process.
    client_cpu_s: float
    #: user + system CPU seconds the registry spent during the run (0 for the sink floor).
    server_cpu_s: float
    #: bytes the registry holds as blobs after the run (0 for the sink floor).
    stored_bytes: int
    ok: bool
    detail: str = ""


def run_child(
    command: list[str], env: dict[str, str], log_path: Path, cpus: frozenset[int] | None = None,
) -> tuple[float, float, float, int, str]:
    """Run ``command`` (on ``cpus``); returns (wall s, peak RSS MB, CPU s, exit code, stdout) for that child alone."""
    with open(log_path, "ab") as log, tempfile.TemporaryFile() as out, _affinity(cpus):
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=log, env=env, cwd=REPO_ROOT)
        peak = PeakRss(child.pid)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    return wall, peak.stop() / MB, usage.ru_utime + usage.ru_stime, child.returncode, stdout


class PeakRss:
    """Polls a process's peak RSS every ``POLL_S`` until it exits.

    Not ``ru_maxrss``: a child's ``ru_maxrss`` starts at the parent's RSS (the kernel carries the
    high-water mark of the forked address space across ``exec``), so it measures this script, not
    the child. On Linux we read the kernel's own high-water mark of the child's address space
    (``VmHWM`` in ``/proc/PID/status``), so only growth in the last poll interval can be missed;
    elsewhere we take the largest RSS seen.
    """

    #: Poll period, seconds.
    POLL_S = 0.02

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=f"rss:{pid}", daemon=True)
        self._thread.start()

    def _sample(self) -> int | None:
        if self._status.exists():
            try:
                text = self._status.read_text()
            except OSError:  # gone between the check and the read
                return None
            match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
            return int(match.group(1)) * 1024 if match else None  # no VmHWM once it is a zombie
        try:
            return self._process.memory_info().rss
        except psutil.Error:
            return None

    def _poll(self) -> None:
        while True:
            sample = self._sample()
            if sample is not None:
                self.peak = max(self.peak, sample)
            if self._done.wait(self.POLL_S):
                return

    def stop(self) -> int:
        """Stop polling (call once the process was reaped); returns the peak in bytes."""
        self._done.set()
        self._thread.join()
        return self.peak


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _stored_bytes(data_dir: Path) -> int:
    blobs = data_dir / "blobs"
    skip = {blobs / "tmp", blobs / "multipart"}
    total = 0
    for root, dirs, files in os.walk(blobs):
        dirs[:] = [d for d in dirs if Path(root) / d not in skip]
        total += sum((Path(root) / name).stat().st_size for name in files)
    return total


def _child_env(endpoint: str, token: str) -> dict[str, str]:
    # HUBFERRY_* tunables pass through (for experiments), but not a Hub or token that would override ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k not in OVERRIDING}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_TOKEN=token,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def measure(
    method: str, repeat: int, folder: Path, total: int, work: Path, floor_target: str, registry_dir: Path,
    cpus: Cpus = Cpus(),
) -> Run:
    """One run of ``method`` against a fresh registry (or the sink), in a fresh child process."""
    log_path = work / f"{method}-{repeat}.log"
    repo_id = f"{USER}/{method.replace('_', '-')}-{repeat}"
    if method == "floor" and floor_target == "sink":
        with sink() as url:
            command = [sys.executable, "-c", FLOOR_CHILD, str(folder), url]
            wall, rss, cpu, code, out = run_child(
                command, _child_env("http://unused", "unused"), log_path, cpus.client,
            )
        return Run(method, repeat, wall, rss, cpu, 0.0, 0, code == 0, _detail(code, out, log_path))

    # Let the single floor PUT stay a basic transfer whatever the data set's size.
    extra = {"multipart_threshold": total + 1} if method == "floor" else {}
    with registry(registry_dir / f"registry-{method}-{repeat}", log_path, cpus, **extra) as hub:
        env = _child_env(hub.endpoint, hub.token)
        if method == "hubferry":
            command = [sys.executable, "-m", "hubferry", "push", str(folder), "--repo", repo_id, "--json"]
        elif method == "raw_upload_folder":
            command = [sys.executable, "-c", RAW_CHILD, repo_id, str(folder)]
        else:
            from huggingface_hub import HfApi

            HfApi(endpoint=hub.endpoint, token=hub.token).create_repo(repo_id, private=True)
            command = [sys.executable, "-c", FLOOR_CHILD, str(folder), "registry", repo_id]
        server_cpu = _cpu(hub.process)
        wall, rss, cpu, code, out = run_child(command, env, log_path, cpus.client)
        server_cpu = _cpu(hub.process) - server_cpu
        stored = _stored_bytes(hub.data_dir)
    ok = code == 0 and stored >= total
    if method == "hubferry" and ok:
        ok = bool(_last_json(out).get("verified"))
    return Run(method, repeat, wall, rss, cpu, server_cpu, stored, ok, _detail(code, out, log_path, stored, total))


def _last_json(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return {}


def _detail(code: int, stdout: str, log_path: Path, stored: int | None = None, total: int | None = None) -> str:
    if code != 0:
        return f"exit {code}; see {log_path}"
    if stored is not None and total is not None and stored < total:
        return f"the registry stored {stored} of {total} bytes"
    return ""


# -- reporting ---------------------------------------------------------------------------------------


@dataclass
class Summary:
    method: str
    median_wall_s: float
    mb_per_s: float
    peak_rss_mb: float
    median_client_cpu_s: float
    median_server_cpu_s: float
    #: Median client CPU seconds per GiB published: the steadiest signal on a shared machine.
    client_cpu_s_per_gib: float = 0.0
    walls: list[float] = field(default_factory=list)


def summarise(runs: list[Run], total: int) -> dict[str, Summary]:
    summaries = {}
    for method in METHODS:
        mine = [r for r in runs if r.method == method and r.ok]
        if not mine:
            continue
        wall = statistics.median(r.wall_s for r in mine)
        summaries[method] = Summary(
            method,
            round(wall, 3),
            round(total / MB / wall, 1),
            round(max(r.peak_rss_mb for r in mine), 1),
            round(statistics.median(r.client_cpu_s for r in mine), 2),
            round(statistics.median(r.server_cpu_s for r in mine), 2),
            round(statistics.median(r.client_cpu_s for r in mine) / (total / GiB), 2),
            [round(r.wall_s, 3) for r in mine],
        )
    return summaries


def paired_ratio(runs: list[Run], method: str, baseline: str) -> float | None:
    """Median over repeats of ``method``'s wall time over ``baseline``'s in the same repeat.

    Both ran back to back on the same machine state, so the ratio of a pair is steadier than the
    ratio of two medians taken over drifting conditions.
    """
    walls = {(r.method, r.repeat): r.wall_s for r in runs if r.ok}
    ratios = [walls[(method, n)] / walls[(baseline, n)] for (m, n) in walls if m == method and (baseline, n) in walls]
    return round(statistics.median(ratios), 3) if ratios else None


def verdict(summaries: dict[str, Summary], runs: list[Run]) -> dict[str, object]:
    """Ratios of hubferry to the baselines and PASS/FAIL against the targets (None when not measured)."""
    ours, raw, floor = (summaries.get(m) for m in METHODS)
    vs_raw = paired_ratio(runs, "hubferry", "raw_upload_folder")
    vs_floor = round(ours.median_wall_s / floor.median_wall_s, 3) if ours and floor else None
    return {
        "hubferry/raw_upload_folder": vs_raw,
        "hubferry/floor": vs_floor,
        "raw_upload_folder/floor": round(raw.median_wall_s / floor.median_wall_s, 3) if raw and floor else None,
        "speed_pass": vs_raw <= TARGET_RATIO if vs_raw is not None else None,
        "rss_pass": ours.peak_rss_mb <= TARGET_RSS_MB if ours else None,
    }


def _mark(passed: object) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def print_table(
    summaries: dict[str, Summary], result: dict[str, object], total: int, files: int, repeat: int, load: str = "",
) -> None:
    print(f"\npublishing {total / GiB:.2f} GiB in {files} files + config.json + README.md, "
          f"{repeat} repeat(s), median wall time; MB = 10^6 bytes")  # fmt: skip
    if load:
        print(f"load average (1/5/15 min): {load}")
    columns = (
        ("wall s", 8), ("MB/s", 8), ("peak RSS MB", 12), ("client CPU s", 13), ("CPU s/GiB", 10), ("server CPU s", 13),
    )
    header = f"{'method':<19} " + " ".join(f"{name:>{width}}" for name, width in columns) + "  runs"
    print(header)
    print("-" * len(header))
    for s in summaries.values():
        runs = ", ".join(f"{w:.2f}" for w in s.walls)
        print(f"{s.method:<19} {s.median_wall_s:>8.2f} {s.mb_per_s:>8.1f} {s.peak_rss_mb:>12.1f} "
              f"{s.median_client_cpu_s:>13.2f} {s.client_cpu_s_per_gib:>10.2f} "
              f"{s.median_server_cpu_s:>13.2f}  {runs}")  # fmt: skip
    print()
    rss = summaries["hubferry"].peak_rss_mb if "hubferry" in summaries else None
    print(f"hubferry / raw_upload_folder = {_shown(result['hubferry/raw_upload_folder'], 'x')}  "
          f"(median of per-repeat ratios; target <= {TARGET_RATIO:.2f}x)  {_mark(result['speed_pass'])}")  # fmt: skip
    print(f"hubferry / floor             = {_shown(result['hubferry/floor'], 'x')}")
    print(f"raw_upload_folder / floor    = {_shown(result['raw_upload_folder/floor'], 'x')}")
    print(f"hubferry peak RSS            = {_shown(rss, ' MB')}  "
          f"(target <= {TARGET_RSS_MB:.0f} MB)  {_mark(result['rss_pass'])}")  # fmt: skip


def _load() -> str:
    """The load average (1, 5, 15 minutes), as ``uptime`` prints it: a noisy machine shows here."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _shown(value: object, unit: str) -> str:
    return "n/a" if value is None else f"{value}{unit}"


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="total size of the weight files (default 2)")
    parser.add_argument("--files", type=int, default=4, help="number of weight files (default 4)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method (default 2); the median is reported")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument(
        "--floor-target",
        choices=("registry", "sink"),
        default="registry",
        help="where the floor PUTs: a presigned LFS URL of the registry (default) or a discard sink",
    )
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help=f"scratch space (default {DEFAULT_WORK})")
    parser.add_argument(
        "--registry-dir",
        type=Path,
        default=None,
        help="where the registries keep their data (default: the scratch space); "
        "a tmpfs such as /dev/shm takes the disk's noise out of the comparison",
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="let the registry and the client share every CPU (default: the registry, standing in for a remote "
        "Hub, gets the first half of the CPUs and the client the rest)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data set and logs afterwards")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or args.files < 1 or args.repeat < 1 or args.size_gib <= 0:
        parser.error(f"unknown methods {unknown}" if unknown else "--files, --repeat and --size-gib must be positive")
    return args


def _lacking_space(size: int, work: Path, registry_dir: Path) -> str | None:
    """Why the data set and one registry's copy of it (plus slack) would not fit, or None."""
    needs: dict[Path, float] = {}
    for place in (work, registry_dir):
        needs[place] = needs.get(place, 0) + size * 1.1
    for place, needed in needs.items():
        free = shutil.disk_usage(place).free
        if free < needed:
            return f"{place} has {free / GiB:.1f} GiB free; this run needs {needed / GiB:.1f} GiB there"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size_gib * GiB)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="publish-", dir=args.work_dir))
    registry_dir = work
    if args.registry_dir:
        registry_dir = Path(tempfile.mkdtemp(prefix="hubferry-bench-", dir=args.registry_dir))
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    runs: list[Run] = []
    failed: list[Run] = []
    try:
        if problem := _lacking_space(size, work, registry_dir):
            print(f"error: {problem}", file=sys.stderr)
            return 2
        cpus = Cpus.split() if args.pin else Cpus()
        load_before = _load()
        say(f"each run publishes {size / GiB:.2f} GiB of fresh random data in {args.files} files under {work}; "
            f"{cpus.describe()}")
        total = 0
        for repeat in range(1, args.repeat + 1):
            # Alternate the order, so whatever drifts during a run (page cache, disk writeback) is shared.
            order = args.methods if repeat % 2 else list(reversed(args.methods))
            for method in order:
                # Fresh bytes for every run and method: the registry deduplicates what it has seen.
                folder = work / f"model-{repeat}-{method}"
                total = make_dataset(folder, size, args.files)
                os.sync()  # start each run without dirty pages (ours or the previous run's) still being written
                run = measure(method, repeat, folder, total, work, args.floor_target, registry_dir, cpus)
                shutil.rmtree(folder, ignore_errors=True)
                runs.append(run)
                say(f"  run {repeat} {method:<18} {run.wall_s:7.2f} s  peak RSS {run.peak_rss_mb:6.1f} MB  "
                    f"{'ok' if run.ok else 'FAILED: ' + run.detail}")  # fmt: skip
        summaries = summarise(runs, total)
        result = verdict(summaries, runs)
        load = f"{load_before} before, {_load()} after"
        failed = [r for r in runs if not r.ok]
        if args.json:
            print(json.dumps({
                "size_bytes": total, "files": args.files, "repeat": args.repeat, "floor_target": args.floor_target,
                "registry_dir": str(registry_dir), "cpus": cpus.describe(),
                "targets": {"ratio": TARGET_RATIO, "peak_rss_mb": TARGET_RSS_MB},
                "methods": {m: asdict(s) for m, s in summaries.items()}, **result,
                "runs": [asdict(r) for r in runs], "ok": not failed, "load_average": load,
            }))  # fmt: skip
        else:
            print_table(summaries, result, total, args.files, args.repeat, load)
            for run in failed:
                print(f"run {run.repeat} of {run.method} failed: {run.detail}")
        return 1 if failed else 0
    finally:
        if registry_dir != work:
            shutil.rmtree(registry_dir, ignore_errors=True)
        if args.keep:
            say(f"kept {work}")
        elif failed:
            for folder in work.glob("model-*"):
                shutil.rmtree(folder, ignore_errors=True)
            say(f"kept the logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

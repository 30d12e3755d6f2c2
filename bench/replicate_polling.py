"""Polling benchmark: 1,000 Replicate trainings tracked at once by one worker, against the fake Replicate.

The promise under test (services/remote.py): every active remote training is read from its provider at
most once per poll interval (``HUBFERRY_POLL_INTERVAL_S``, default 5 s), by the poll cycle the worker's
Housekeeper runs, by webhooks and by status reads alike, and the cycle for 1,000 jobs fits in one interval.

Set-up (not timed): the fake Replicate runs in its own process (so its CPU and memory are not the
worker's), optionally answering every request after ``--latency-ms`` (a network round trip; the fake
on loopback answers in about a millisecond, Replicate over the internet in 50-150 ms). ``--jobs``
trainings of 6,000 steps are created at the fake and recorded in a fresh job store as real submits
record them (each job keeps its own Replicate token in the vault), all in ``training``.

Measured in this process, which plays the worker:
- **poll cycles** run back to back as the Housekeeper schedules them (the next one ``--interval`` after
  the previous one ended): cycle wall time, CPU seconds (this process: every thread), RSS;
- **the baseline** in the same run: reading every training once with the same client factory and the
  same concurrency, nothing else (no job store, no log files, no progress): what polling costs at least;
- **provider calls per job per interval**, counted by the fake, during cycles run together with status
  readers (threads calling ``refresh`` on random jobs, as ``jobs show``/``watch``/the API do): the
  average, and the shortest gap between two reads of one training (at least one interval means at most
  one call per job per interval).

It reports; it never gates CI. Usage::

    .venv/bin/python bench/replicate_polling.py                     # 1,000 jobs, 5 s interval, loopback
    .venv/bin/python bench/replicate_polling.py --latency-ms 50     # with a network round trip per call
    .venv/bin/python bench/replicate_polling.py --jobs 200 --cycles 2   # quick check
    .venv/bin/python bench/replicate_polling.py --json              # one JSON line on stdout
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # ships no type information

REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
OWNER = "bench"


# -- the fake Replicate, in a child process -------------------------------------------------------------------


def serve_fake(latency_ms: float) -> None:
    """Child mode: serve the fake on loopback; print ``{"base_url", "token"}``; answer ``calls`` on stdin."""
    import asyncio
    import socket

    import uvicorn

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from fakes import replicate_server
    from fakes.replicate_routes import create_app
    from fakes.replicate_server import FakeReplicate

    # The fake moves every training on each tick and on each request: with 1,000 trainings that is the
    # fake's own cost, not the worker's, so it ticks at most every 50 ms here.
    replicate_server.TICK_S = 0.1
    tick = FakeReplicate._tick
    last = [0.0]

    def throttled_tick(self: FakeReplicate) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.05:
            last[0] = now
            tick(self)

    FakeReplicate._tick = throttled_tick  # type: ignore[method-assign]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    fake = FakeReplicate(f"http://127.0.0.1:{sock.getsockname()[1]}")
    # 6,000 steps at 10 steps/s: runs for the whole benchmark; one bar line per second per training
    fake.knobs.steps_per_second, fake.knobs.refresh_s, fake.knobs.boot_s, fake.knobs.setup_s = 10.0, 1.0, 0.0, 0.5
    recorded = create_app(fake)

    async def app(scope: Any, receive: Any, send: Any) -> None:  # a network round trip before each answer
        if latency_ms > 0 and scope["type"] == "http":
            await asyncio.sleep(latency_ms / 1000)
        await recorded(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                           backlog=4096, limit_concurrency=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    print(json.dumps({"base_url": fake.base_url, "token": fake.token}), flush=True)
    for line in sys.stdin:
        if line.strip() == "calls":
            with fake._lock:
                reads = [(c.training_id, c.at) for c in fake.requests
                         if c.method == "GET" and c.route == "/v1/trainings/{training_id}"]
                other = sum(1 for c in fake.requests if c.route != "/v1/trainings/{training_id}")
            print(json.dumps({"reads": reads, "other": other, "now": time.monotonic()}), flush=True)
    server.should_exit = True


class FakeProcess:
    def __init__(self, latency_ms: float, cpus: set[int] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake", "--latency-ms", str(latency_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        if cpus:
            os.sched_setaffinity(self.process.pid, cpus)
        assert self.process.stdout is not None and self.process.stdin is not None
        started = json.loads(self.process.stdout.readline())
        self.base_url, self.token = started["base_url"], started["token"]

    def reads(self) -> dict[str, Any]:
        """Every ``GET /v1/trainings/{id}`` the fake answered: ``(training id, monotonic time)``."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("calls\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- set-up ---------------------------------------------------------------------------------------------------


def dataset_uri() -> str:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from fakes.replicate_trainer import make_dataset_zip

    path = Path(tempfile.mkdtemp(prefix="hubferry-bench-")) / "data.zip"
    make_dataset_zip(path, images=3)
    return "data:application/zip;base64," + base64.b64encode(path.read_bytes()).decode()


def set_up(ctx: Any, fake: FakeProcess, jobs: int, threads: int) -> list[str]:
    """``jobs`` trainings at the fake and their jobs in ``training``, as submits record them; returns job ids."""
    from hubferry.domain.jobs import JobState, new_job
    from hubferry.services import credentials
    from hubferry.store.database import utcnow
    from hubferry.trainers.replicate_api import connect

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from fakes.replicate_schema import TRAINER_NAME, TRAINER_OWNER, TRAINER_VERSION

    api = connect(ctx.settings, fake.token)
    model, destination = f"{TRAINER_OWNER}/{TRAINER_NAME}", "alice/bench-lora"
    api.ensure_model(destination)
    data = dataset_uri()

    def create(index: int) -> str:
        training = api.create_training(model, TRAINER_VERSION, {"input_images": data, "steps": 6000,
                                                                 "trigger_word": "TOK"}, destination, None)
        job = new_job(owner=OWNER, name=f"lora-{index:04d}", trainer="replicate", dataset="replicate",
                      repo_id=f"bench/lora-{index:04d}", now=utcnow(),
                      params={"model": model, "version": TRAINER_VERSION, "input": {}, "destination": destination,
                              "total_steps": 6000, "output_dir": str(ctx.settings.home / "outputs" / f"j{index}")})
        ctx.jobs.create(job)
        credentials.bind_replicate_to_job(ctx.credentials, job.id, fake.token, credentials.SHELL)
        ctx.jobs.transition(job.id, JobState.QUEUED, JobState.PREPARING)
        ctx.jobs.set_runtime(job.id, log_path=str(ctx.settings.home / "logs" / f"{job.id}.log"),
                             output_dir=job.params["output_dir"],
                             trainer_handle={"training_id": training["id"], "destination": destination,
                                             "owner": OWNER, "job_id": job.id,
                                             "web_url": f"https://replicate.com/p/{training['id']}"})
        ctx.jobs.transition(job.id, JobState.PREPARING, JobState.TRAINING)
        return job.id

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(create, range(jobs)))


# -- measurements ---------------------------------------------------------------------------------------------


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline(ctx: Any, fake: FakeProcess, job_ids: list[str], threads: int) -> dict[str, float]:
    """Read every training once through the same client factory and concurrency: the floor of a poll cycle."""
    from hubferry.trainers.replicate_api import connect

    api = connect(ctx.settings, fake.token)
    trainings = [ctx.jobs.require(j).trainer_handle["training_id"] for j in job_ids]
    started, cpu = time.monotonic(), cpu_s()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(api.get_training, trainings))
    return {"wall_s": time.monotonic() - started, "cpu_s": cpu_s() - cpu}


def run_cycles(ctx: Any, cycles: int, interval: float, readers: int = 0) -> list[dict[str, float]]:
    """Poll cycles as the Housekeeper schedules them, optionally with status readers running meanwhile."""
    from hubferry.services.remote import poll_due, refresh

    stop = threading.Event()
    ids = [j.id for j in ctx.jobs.list_jobs(limit=100_000)]

    def read_statuses() -> None:
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            refresh(ctx, rng.choice(ids))
            stop.wait(0.005)

    workers = [threading.Thread(target=read_statuses, daemon=True) for _ in range(readers)]
    for worker in workers:
        worker.start()
    results = []
    for index in range(cycles):
        started, cpu = time.monotonic(), cpu_s()
        polled = poll_due(ctx)
        wall = time.monotonic() - started
        results.append({"cycle": index, "polled": polled, "wall_s": wall, "cpu_s": cpu_s() - cpu,
                        "rss_mb": psutil.Process().memory_info().rss / MB})
        if index < cycles - 1:
            time.sleep(interval)  # the Housekeeper's next run is due one interval after this one ended
    stop.set()
    for worker in workers:
        worker.join()
    return results


def call_stats(reads: list[tuple[str, float]], since: float, interval: float) -> dict[str, float]:
    """Reads of each training after ``since``: its read rate per interval (reads after its first, over the
    time they span, in intervals), averaged and at worst, and the shortest gap between two reads of one training.
    """
    by_training: dict[str, list[float]] = {}
    for training, at in reads:
        if at >= since:
            by_training.setdefault(training, []).append(at)
    rates, gaps = [], []
    for times in by_training.values():
        times.sort()
        gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
        if len(times) > 1:
            rates.append((len(times) - 1) / ((times[-1] - times[0]) / interval))
    return {"reads": sum(len(v) for v in by_training.values()),
            "per_job_per_interval": sum(rates) / len(rates) if rates else 0.0,
            "per_job_per_interval_max": max(rates, default=0.0),
            "min_gap_s": min(gaps) if gaps else float("inf")}


# -- main -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="HUBFERRY_POLL_INTERVAL_S")
    parser.add_argument("--cycles", type=int, default=3, help="poll cycles timed (then 2 more with readers)")
    parser.add_argument("--readers", type=int, default=4, help="status-reader threads in the second phase")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay the fake adds to every answer")
    parser.add_argument("--threads", type=int, default=None,
                        help="concurrency of set-up and of the baseline (default: the poll cycle's POLL_THREADS)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the fake and the worker share every CPU (default: each gets half of them)")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.latency_ms)
        return 0
    if args.threads is None:
        from hubferry.services.remote import POLL_THREADS

        args.threads = POLL_THREADS

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    from hubferry.config import load_settings
    from hubferry.logs import configure
    from hubferry.services.context import open_context

    configure()  # as the worker logs: INFO to stderr
    home = Path(tempfile.mkdtemp(prefix="hubferry-bench-home-"))
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    fake = FakeProcess(args.latency_ms, set(cpus[: len(cpus) // 2]) if pin else None)
    if pin:  # the fake stands in for a remote service: it must not compete with the worker for CPU
        os.sched_setaffinity(0, set(cpus[len(cpus) // 2:]))
    try:
        os.environ.pop("REPLICATE_API_TOKEN", None)
        settings = load_settings(home=home, replicate_base_url=fake.base_url, poll_interval_s=args.interval,
                                 read_timeout=30.0, max_attempts=3, retry_base_delay=0.1)
        ctx = open_context(settings)
        started = time.monotonic()
        job_ids = set_up(ctx, fake, args.jobs, args.threads)
        half = len(cpus) // 2
        placement = f"fake on CPUs {cpus[:half]}, worker on {cpus[half:]}" if pin else "shared CPUs"
        say(f"set up {len(job_ids)} trainings and jobs in {time.monotonic() - started:.1f} s "
            f"(fake latency {args.latency_ms:g} ms; {placement})")
        floor = baseline(ctx, fake, job_ids, args.threads)
        say(f"baseline: read {len(job_ids)} trainings in {floor['wall_s']:.2f} s, {floor['cpu_s']:.2f} CPU s "
            f"({args.threads} threads)")
        rss_before = psutil.Process().memory_info().rss / MB

        plain = run_cycles(ctx, args.cycles, args.interval)
        for c in plain:
            say(f"cycle {c['cycle']}: {c['polled']} jobs in {c['wall_s']:.2f} s, {c['cpu_s']:.2f} CPU s, "
                f"RSS {c['rss_mb']:.0f} MB")

        time.sleep(args.interval)
        since = fake.reads()["now"]
        mixed = run_cycles(ctx, 2, args.interval, readers=args.readers)
        stats = call_stats([(t, at) for t, at in fake.reads()["reads"]], since, args.interval)
        for c in mixed:
            say(f"cycle {c['cycle']} with {args.readers} status readers: {c['polled']} jobs in {c['wall_s']:.2f} s")
        say(f"provider reads per job per interval: {stats['per_job_per_interval']:.3f} on average, "
            f"{stats['per_job_per_interval_max']:.3f} at worst (must be <= 1); shortest gap between two reads of "
            f"one training {stats['min_gap_s']:.2f} s (interval {args.interval:g} s)")

        steady = plain[1:] or plain  # the first cycle reads every log from its start
        wall = max(c["wall_s"] for c in steady)
        cpu = sum(c["cpu_s"] for c in steady) / len(steady)
        result = {
            "jobs": args.jobs, "interval_s": args.interval, "latency_ms": args.latency_ms, "pinned": pin,
            "cycle_wall_s_max": round(wall, 3), "cycle_wall_s": [round(c["wall_s"], 3) for c in plain],
            "cycle_cpu_s": round(cpu, 3), "cpu_ms_per_job": round(cpu / args.jobs * 1000, 3),
            "rss_mb": round(max(c["rss_mb"] for c in plain + mixed), 1), "rss_mb_before_cycles": round(rss_before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000, 1),
            "baseline_wall_s": round(floor["wall_s"], 3), "baseline_cpu_s": round(floor["cpu_s"], 3),
            "wall_vs_baseline": round(wall / floor["wall_s"], 2) if floor["wall_s"] else None,
            "cpu_vs_baseline": round(cpu / floor["cpu_s"], 2) if floor["cpu_s"] else None,
            "reads_per_job_per_interval": round(stats["per_job_per_interval"], 3),
            "reads_per_job_per_interval_max": round(stats["per_job_per_interval_max"], 3),
            "min_gap_between_reads_s": round(stats["min_gap_s"], 3),
            "fits_in_interval": wall <= args.interval,
        }
        say(f"cycle {wall:.2f} s max ({result['wall_vs_baseline']}x the baseline), {cpu:.2f} CPU s per cycle "
            f"({result['cpu_ms_per_job']} ms per job, {result['cpu_vs_baseline']}x the baseline), "
            f"RSS {result['rss_mb']} MB; fits in one {args.interval:g} s interval: {result['fits_in_interval']}")
        if args.json:
            print(json.dumps(result))
        return 0
    finally:
        fake.close()


if __name__ == "__main__":
    sys.exit(main())

"""Dataset packaging benchmark: ``hubferry.dataset.pack`` against a raw Pillow decode+save loop.

Targets (issue 8): at least 50 images/s per core for 1024-px JPEGs in, normalised out, with both
cores busy (a process pool), and a peak RSS of at most 500 MB for 1,000 images. Both contenders run
in the same invocation on the same generated photos, each in a fresh child process whose whole
process tree (the pool's workers included) is sampled for RSS, so the ratios hold where absolute
numbers are noisy. CPU seconds are measured too: on a machine shared with other work, images per
CPU-second is the per-core rate that does not depend on what else runs. It reports; it never gates CI.

Two scenarios: upright photos within max side (hubferry keeps their JPEG data and cuts out the
metadata) and EXIF-rotated ones (decoded, turned and re-encoded: the worst case). The baseline is the
floor of re-encoding: one process that opens, fully decodes and re-encodes each JPEG at hubferry's
settings (quality 95, 4:4:4), with no checks, hashing, captions or zip.

Usage::

    .venv/bin/python bench/dataset.py                 # 1,000 images of 1024 px, 2 workers
    .venv/bin/python bench/dataset.py --images 200    # quick check
    .venv/bin/python bench/dataset.py --json          # one JSON line on stdout
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Images per second per core that hubferry must reach.
TARGET_PER_CORE = 50.0
#: Peak RSS of the whole pack (parent and workers), MB (10^6 bytes).
TARGET_RSS_MB = 500.0
MB = 1_000_000


def make_photos(folder: Path, count: int, side: int, *, rotated: bool = False) -> int:
    """``count`` distinct photo-like JPEGs (smooth shapes and gradients plus sensor-like noise), ``side``
    px on the long side, with EXIF (orientation 6, as phones write, when ``rotated``); returns their
    total size in bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(8)
    height = side * 3 // 4
    y, x = np.mgrid[0:height, 0:side].astype(np.float32)
    bases = []
    for k in range(8):
        r = 128 + 90 * np.sin(x / (40 + 7 * k)) * np.cos(y / (55 + 5 * k))
        g = 128 + 90 * np.cos((x + y) / (70 + 9 * k))
        b = 255 * (x / side) * (1 - y / height) + 20 * k
        bases.append(np.stack([r, g, b], axis=-1))
    total = 0
    for i in range(count):
        noise = rng.normal(0, 6, size=(height, side, 1)).astype(np.float32)
        pixels = np.clip(bases[i % len(bases)] + noise + (i % 50), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        exif = image.getexif()
        exif[0x0110] = "bench camera"  # Model
        if rotated:
            exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to view
        path = folder / f"photo_{i:05d}.jpg"
        image.save(path, quality=90, exif=exif)
        total += path.stat().st_size
    return total


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the pool's workers, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _child_baseline(folder: Path) -> dict[str, float]:
    from PIL import Image

    files = sorted(folder.glob("*.jpg"))
    started, cpu = time.perf_counter(), _cpu_seconds()
    for path in files:
        with Image.open(path) as image:
            image.load()
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=95, subsampling=0)
    return {"elapsed_s": time.perf_counter() - started, "cpu_s": _cpu_seconds() - cpu, "images": len(files)}


def _child_hubferry(folder: Path, dest: Path, workers: int) -> dict[str, float]:
    from hubferry import dataset

    started, cpu = time.perf_counter(), _cpu_seconds()
    result = dataset.pack(folder, dest, dataset.PackOptions(max_side=1024, workers=workers))
    return {"elapsed_s": time.perf_counter() - started, "cpu_s": _cpu_seconds() - cpu,
            "images": len(result.report.images), "rejected": len(result.report.rejections)}


class TreeRss:
    """Samples the summed RSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self._root, *self._root.children(recursive=True)]
                total = 0
                for process in processes:
                    try:
                        total += process.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_child(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run this script in child mode; returns its JSON plus wall time and peak tree RSS."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, env=env, text=True)
    with TreeRss(process.pid) as rss:
        stdout, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed with exit code {process.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall_s=time.perf_counter() - started, peak_rss_mb=rss.peak / MB)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder, *rest = args.child
        if kind == "baseline":
            print(json.dumps(_child_baseline(Path(folder))))
        else:
            print(json.dumps(_child_hubferry(Path(folder), Path(rest[0]), int(rest[1]))))
        return

    work = Path(tempfile.mkdtemp(prefix="hubferry-bench-dataset-"))
    log = sys.stderr
    env = {**os.environ, "HUBFERRY_HOME": str(work / "home"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    scenarios = []
    try:
        for name, rotated in SCENARIOS:
            photos = work / name
            photos.mkdir()
            print(f"{name}: generating {args.images} JPEGs of {args.side} px ...", file=log)
            size = make_photos(photos, args.images, args.side, rotated=rotated)
            print(f"{name}: baseline (raw Pillow decode+save, one process) ...", file=log)
            baseline = run_child(["--child", "baseline", str(photos)], env)
            print(f"{name}: hubferry dataset.pack with {args.workers} workers ...", file=log)
            ours = run_child(["--child", "hubferry", str(photos), str(work / f"{name}.zip"), str(args.workers)], env)
            scenarios.append(_scenario(name, size, baseline, ours, args.workers))
            shutil.rmtree(photos)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"images": args.images, "side": args.side, "workers": args.workers,
              "load_average_1min": round(os.getloadavg()[0], 2), "scenarios": scenarios,
              "target_per_core": TARGET_PER_CORE, "target_rss_mb": TARGET_RSS_MB,
              "targets_met": all(s["per_cpu_s_ok"] and s["rss_ok"] for s in scenarios)}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.images} JPEGs of {args.side} px per scenario, {args.workers} workers, load average "
          f"{report['load_average_1min']} on {os.cpu_count()} cores (other work on the machine lowers the "
          "wall-clock rates, not the per-CPU-second ones)")
    for scenario in scenarios:
        _print(scenario)


#: (name, EXIF-rotated?): upright photos within max side are kept as they are minus their metadata;
#: rotated ones must be decoded, turned and re-encoded (the worst case for 1024-px input).
SCENARIOS = (("upright", False), ("rotated", True))


def _scenario(name: str, size: int, baseline: dict[str, float], ours: dict[str, float], workers: int) -> dict:
    base_rate = baseline["images"] / baseline["elapsed_s"]
    base_cpu_rate = baseline["images"] / baseline["cpu_s"]
    rate = ours["images"] / ours["elapsed_s"]
    per_core = rate / workers
    per_cpu_second = ours["images"] / ours["cpu_s"]
    return {
        "name": name, "input_mb": round(size / MB, 1), "accepted": ours["images"], "rejected": ours["rejected"],
        "baseline_images_per_s": round(base_rate, 1), "baseline_images_per_cpu_s": round(base_cpu_rate, 1),
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"], 1),
        "hubferry_images_per_s": round(rate, 1), "hubferry_images_per_s_per_core": round(per_core, 1),
        "hubferry_images_per_s_wall": round(ours["images"] / ours["wall_s"], 1),
        "hubferry_images_per_cpu_s": round(per_cpu_second, 1),
        "hubferry_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "ratio_total_vs_baseline": round(rate / base_rate, 2),
        "ratio_per_core_vs_baseline": round(per_core / base_rate, 2),
        "ratio_per_cpu_s_vs_baseline": round(per_cpu_second / base_cpu_rate, 2),
        "per_core_ok": per_core >= TARGET_PER_CORE, "per_cpu_s_ok": per_cpu_second >= TARGET_PER_CORE,
        "rss_ok": ours["peak_rss_mb"] <= TARGET_RSS_MB,
    }


def _print(s: dict) -> None:
    verdict = {True: "met", False: "MISSED"}
    print(f"[{s['name']}] {s['input_mb']} MB in, {s['accepted']} accepted")
    print(f"  baseline (raw Pillow decode+save, 1 process): {s['baseline_images_per_s']:7.1f} images/s, "
          f"{s['baseline_images_per_cpu_s']:.1f} per CPU-second, peak RSS {s['baseline_peak_rss_mb']:.0f} MB")
    print(f"  hubferry pack:                                {s['hubferry_images_per_s']:7.1f} images/s "
          f"({s['hubferry_images_per_s_per_core']:.1f}/s per core; {s['hubferry_images_per_s_wall']}/s counting "
          f"process start-up), {s['hubferry_images_per_cpu_s']:.1f} per CPU-second, peak RSS "
          f"{s['hubferry_peak_rss_mb']:.0f} MB (workers included)")
    print(f"  ratios vs baseline: total {s['ratio_total_vs_baseline']}x, per core {s['ratio_per_core_vs_baseline']}x, "
          f"per CPU-second {s['ratio_per_cpu_s_vs_baseline']}x (pool start-up, checks, hashes and the zip included)")
    print(f"  targets: >= {TARGET_PER_CORE:.0f}/s per core: wall {verdict[s['per_core_ok']]}, per CPU-second "
          f"{verdict[s['per_cpu_s_ok']]}; <= {TARGET_RSS_MB:.0f} MB: {verdict[s['rss_ok']]}")


if __name__ == "__main__":
    main()

"""Dataset packaging benchmark: ``hubferry.dataset.pack`` against a raw Pillow decode+save loop.

Targets (issue 8): at least 50 images/s per core for 1024-px JPEGs in, normalised out, with both
cores busy (a process pool), and a peak RSS of at most 500 MB for 1,000 images. Both contenders run
in the same invocation on the same generated photos, each in a fresh child process whose whole
process tree (the pool's workers included) is sampled for RSS, so the ratios hold where absolute
numbers are noisy. It reports; it never gates CI.

The baseline is the floor of the work: one process that opens, fully decodes and re-encodes each
JPEG at the same settings (quality 95, 4:4:4), with no checks, hashing, captions or zip.

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


def make_photos(folder: Path, count: int, side: int) -> int:
    """``count`` distinct photo-like JPEGs (smooth shapes and gradients plus sensor-like noise), about
    ``side`` px on the long side, with EXIF; returns their total size in bytes."""
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
    try:
        photos = work / "photos"
        photos.mkdir()
        log = sys.stderr
        print(f"generating {args.images} JPEGs of {args.side} px ...", file=log)
        size = make_photos(photos, args.images, args.side)
        env = {**os.environ, "HUBFERRY_HOME": str(work / "home"),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        print("baseline: raw Pillow decode+save, one process ...", file=log)
        baseline = run_child(["--child", "baseline", str(photos)], env)
        print(f"hubferry: dataset.pack with {args.workers} workers ...", file=log)
        ours = run_child(["--child", "hubferry", str(photos), str(work / "data.zip"), str(args.workers)], env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base_rate = baseline["images"] / baseline["elapsed_s"]
    base_cpu_rate = baseline["images"] / baseline["cpu_s"]
    rate = ours["images"] / ours["elapsed_s"]
    per_core = rate / args.workers
    per_cpu_second = ours["images"] / ours["cpu_s"]
    load = os.getloadavg()[0]
    report = {
        "images": args.images, "input_mb": round(size / MB, 1), "workers": args.workers,
        "load_average_1min": round(load, 2),
        "baseline_images_per_s": round(base_rate, 1),
        "baseline_images_per_cpu_s": round(base_cpu_rate, 1),
        "hubferry_images_per_s": round(rate, 1),
        "hubferry_images_per_s_per_core": round(per_core, 1),
        "hubferry_images_per_cpu_s": round(per_cpu_second, 1),
        "ratio_per_cpu_s_vs_baseline": round(per_cpu_second / base_cpu_rate, 2),
        "hubferry_wall_s": round(ours["wall_s"], 2),
        "hubferry_images_per_s_wall": round(ours["images"] / ours["wall_s"], 1),
        "ratio_total_vs_baseline": round(rate / base_rate, 2),
        "ratio_per_core_vs_baseline": round(per_core / base_rate, 2),
        "hubferry_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"], 1),
        "rejected": ours["rejected"],
        "target_per_core": TARGET_PER_CORE, "target_rss_mb": TARGET_RSS_MB,
        "per_core_ok": per_core >= TARGET_PER_CORE, "per_cpu_s_ok": per_cpu_second >= TARGET_PER_CORE,
        "rss_ok": ours["peak_rss_mb"] <= TARGET_RSS_MB,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.images} JPEGs ({report['input_mb']} MB), {args.workers} workers, load average {load:.2f} "
          f"on {os.cpu_count()} cores (other work on the machine lowers the wall-clock rates, not the CPU ones)")
    print(f"  baseline (raw Pillow decode+save, 1 process): {base_rate:7.1f} images/s, "
          f"peak RSS {report['baseline_peak_rss_mb']:.0f} MB")
    print(f"  hubferry pack:                                {rate:7.1f} images/s "
          f"({per_core:.1f}/s per core; {report['hubferry_images_per_s_wall']}/s counting process start-up), "
          f"peak RSS {report['hubferry_peak_rss_mb']:.0f} MB (workers included)")
    print(f"  per CPU-second: baseline {base_cpu_rate:.1f}, hubferry {per_cpu_second:.1f} images "
          f"({report['ratio_per_cpu_s_vs_baseline']}x; pool start-up, checks, hashing and the zip included)")
    print(f"  ratios: total {report['ratio_total_vs_baseline']}x, per core {report['ratio_per_core_vs_baseline']}x "
          "the baseline")
    print(f"  targets: >= {TARGET_PER_CORE:.0f}/s per core: wall {'met' if report['per_core_ok'] else 'MISSED'}, "
          f"CPU {'met' if report['per_cpu_s_ok'] else 'MISSED'}; "
          f"<= {TARGET_RSS_MB:.0f} MB: {'met' if report['rss_ok'] else 'MISSED'}")


if __name__ == "__main__":
    main()

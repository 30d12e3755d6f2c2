"""A simulated ``ostris/flux-dev-lora-trainer`` run: the log it prints, when it ends, and the tar it returns.

Everything here is a function of the inputs, the dataset zip and a simulated clock, so a test that moves
the clock by hand sees the same log every time. The strings come from replicate/flux-fine-tuner
``train.py``/``caption.py`` and ai-toolkit; the training bar is rendered by tqdm's own ``format_meter``,
one ``\\n``-terminated line per refresh, as Cog turns tqdm's ``\\r`` redraws into lines.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

JOB_NAME = "flux_train_replicate"
JOB_DIR = f"output/{JOB_NAME}"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class TrainerKnobs:
    """How a simulated training behaves; times are in simulated seconds (see ``FakeReplicate.set_speed``)."""

    #: Time in ``starting`` (queued, booting) before ``processing``.
    boot_s: float = 0.2
    #: Stay in ``starting`` until released (``FakeReplicate.release``).
    hold_starting: bool = False
    #: Time from ``processing`` to the first training step (the preamble lines spread over it).
    setup_s: float = 0.3
    #: Training speed; the printed it/s follows it.
    steps_per_second: float = 100.0
    #: tqdm's refresh interval: at most one bar line per this much time.
    refresh_s: float = 0.1
    #: Fail when this step is reached, with ``fail_error`` as the training's error.
    fail_at_step: int | None = None
    fail_error: str = "CUDA out of memory. Tried to allocate 2.00 GiB"


@dataclass(frozen=True)
class Dataset:
    """What ``extract_zip`` finds in ``input_images``."""

    files: tuple[str, ...]
    images: tuple[str, ...]
    captions: dict[str, str] = field(default_factory=dict)


def read_dataset(data: bytes) -> Dataset | None:
    """The zip's contents as the trainer sees them, or ``None`` when it is not a zip (``zipfile.is_zipfile``)."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        return None
    try:
        with zipfile.ZipFile(buffer) as archive:
            names = [i.filename for i in archive.infolist()
                     if not i.filename.startswith("__MACOSX/") and not i.filename.startswith("._")]
            captions = {
                posixpath.splitext(name)[0]: archive.read(name).decode("utf-8", "replace").strip()
                for name in names if name.lower().endswith(".txt")
            }
    except (zipfile.BadZipFile, OSError, EOFError):
        return None
    images = tuple(n for n in names if n.lower().endswith(IMAGE_SUFFIXES) and "/." not in f"/{n}")
    return Dataset(tuple(names), images, captions)


#: The smallest JPEG header a trainer sniffing magic bytes would accept; the fake only reads names.
FAKE_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def make_dataset_zip(path: Path, images: int = 3, captioned: int = 1) -> Path:
    """Write a training zip: ``images`` JPEGs, the first ``captioned`` with a ``.txt`` caption, plus macOS litter."""
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(1, images + 1):
            archive.writestr(f"IMG_{index:04d}.jpg", FAKE_JPEG)
            if index <= captioned:
                archive.writestr(f"IMG_{index:04d}.txt", f"a photo of TOK, picture {index}")
        archive.writestr("__MACOSX/._IMG_0001.jpg", b"resource fork")
    return path


class SimulatedRun:
    """One ``train()`` call from the moment its input is in hand (``begin``, simulated seconds)."""

    def __init__(self, inputs: dict[str, Any], dataset: Dataset, knobs: TrainerKnobs, begin: float) -> None:
        self.inputs = inputs
        self.dataset = dataset
        self.knobs = knobs
        self.steps = int(inputs["steps"])
        self.train_start = begin + knobs.setup_s
        self.outcome: str | None = None  # "succeeded" or "failed"
        self.error: str | None = None
        self.ended_at: float | None = None
        self._begin = begin
        self._setup = setup_lines(inputs, dataset)
        self._setup_done = 0
        self._last_n: int | None = None
        self._next_refresh = self.train_start

    def advance(self, now: float) -> list[str]:
        """The log lines printed up to ``now`` that were not returned before (each ends with ``\\n``)."""
        lines: list[str] = []
        if self.outcome is not None:
            return lines
        knobs = self.knobs
        if now >= self.train_start or knobs.setup_s <= 0:
            due = len(self._setup)
        else:
            due = min(len(self._setup), int(len(self._setup) * (now - self._begin) / knobs.setup_s))
        lines += self._setup[self._setup_done : due]
        self._setup_done = max(self._setup_done, due)
        rate = max(knobs.steps_per_second, 1e-9)
        while self.outcome is None and self._next_refresh <= now + 1e-9:  # float sums of refresh_s
            at = self._next_refresh
            n = min(self.steps, int(round((at - self.train_start) * rate, 9)))
            if knobs.fail_at_step is not None:
                n = min(n, knobs.fail_at_step)
            if n != self._last_n:
                lines.append(self.bar_line(n, at - self.train_start))
                self._last_n = n
            if knobs.fail_at_step is not None and n >= knobs.fail_at_step:
                self._end("failed", at, knobs.fail_error)
                lines += traceback_lines("RuntimeError", knobs.fail_error)
            elif n >= self.steps:
                self._end("succeeded", at, None)
                lines += final_lines(self.inputs, self.dataset)
            else:  # the next refresh at which the count has moved
                self._next_refresh = max(at + knobs.refresh_s, self.train_start + (n + 1) / rate)
        return [line + "\n" for line in lines]

    def bar_line(self, n: int, elapsed: float) -> str:
        postfix = None
        if n > 0:
            postfix = f"lr: {float(self.inputs['learning_rate']):.1e} loss: {loss_at(n, self.steps):.3e}"
        return tqdm.format_meter(n, self.steps, elapsed, prefix=JOB_NAME, postfix=postfix)

    def _end(self, outcome: str, at: float, error: str | None) -> None:
        self.outcome, self.ended_at, self.error = outcome, at, error


def loss_at(step: int, steps: int) -> float:
    """A plausible, repeatable loss curve: down from ~0.42 with some noise."""
    noise = int(hashlib.sha256(str(step).encode()).hexdigest()[:4], 16) / 0xFFFF - 0.5
    return 0.42 * (0.7 + 0.3 * math.exp(-3.0 * step / max(steps, 1))) + 0.02 * noise


def traceback_lines(kind: str, message: str) -> list[str]:
    """How Cog logs the exception that failed ``train()``."""
    return [
        "Traceback (most recent call last):",
        '  File "/root/.pyenv/versions/3.11.10/lib/python3.11/site-packages/cog/server/worker.py", '
        "line 352, in _predict",
        "    result = predict(**payload)",
        '  File "/src/train.py", line 305, in train',
        "    job.run()",
        f"{kind}: {message}",
    ]  # fmt: skip


def process_config(inputs: dict[str, Any]) -> dict[str, Any]:
    """The ai-toolkit process config ``train()`` builds (the part the log and ``config.yaml`` show)."""
    steps, rank = int(inputs["steps"]), int(inputs["lora_rank"])
    return {
        "type": "custom_sd_trainer",
        "training_folder": "output",
        "device": "cuda:0",
        "trigger_word": inputs["trigger_word"],
        "network": {"type": "lora", "linear": rank, "linear_alpha": rank},
        "save": {"dtype": "float16", "save_every": steps + 1, "max_step_saves_to_keep": 1},
        "datasets": [{"folder_path": "input_images", "caption_ext": "txt",
                      "caption_dropout_rate": inputs["caption_dropout_rate"], "shuffle_tokens": False,
                      "cache_latents_to_disk": inputs["cache_latents_to_disk"], "cache_latents": True,
                      "resolution": resolutions(inputs)}],
        "train": {"batch_size": inputs["batch_size"], "steps": steps, "gradient_accumulation_steps": 1,
                  "train_unet": True, "train_text_encoder": False, "content_or_style": "balanced",
                  "gradient_checkpointing": True, "noise_scheduler": "flowmatch",
                  "optimizer": inputs["optimizer"], "lr": inputs["learning_rate"],
                  "ema_config": {"use_ema": True, "ema_decay": 0.99}, "dtype": "bf16"},
        "model": {"name_or_path": "FLUX.1-dev", "is_flux": True, "quantize": True},
    }  # fmt: skip


def resolutions(inputs: dict[str, Any]) -> list[int]:
    return [int(r) for r in str(inputs["resolution"]).split(",") if r.strip().isdigit()] or [512]


def setup_lines(inputs: dict[str, Any], dataset: Dataset) -> list[str]:
    """Everything ``train()`` prints before the first training step."""
    lines = [f"Extracted {len(dataset.files)} files from zip to input_images"]
    uncaptioned = [i for i in dataset.images if posixpath.splitext(i)[0] not in dataset.captions]
    if inputs["autocaption"] and uncaptioned:
        lines += ["downloading to:  /src/llava-v1.5-13b", "downloading took:  3.41"]
        for image in dataset.images:
            if image in uncaptioned:
                lines.append(f"Caption for input_images/{image}: {generated_caption(inputs)}")
            else:
                lines.append(f"{posixpath.basename(image)} is already captioned")
    lines.append("Starting train job")
    lines += json.dumps(process_config(inputs), indent=4).splitlines()
    rank, count = int(inputs["lora_rank"]), len(dataset.images)
    lines += [
        "Running  1 process", "", "#############################################",
        f"# Running job: {JOB_NAME}", "#############################################", "",
        "Loading Flux model", "Loading transformer", "Quantizing transformer", "Loading vae", "Loading t5",
        "Quantizing T5", "Loading clip", "making pipe", "preparing",
        f"create LoRA network. base dim (rank): {rank}, alpha: {rank}",
        "neuron dropout: p=None, rank dropout: p=None, module dropout: p=None",
        "create LoRA for Text Encoder: 0 modules.", "create LoRA for U-Net: 494 modules.", "enable LoRA for U-Net",
    ]  # fmt: skip
    for size in resolutions(inputs):
        lines += [
            "Dataset: input_images", "  -  Preprocessing image dimensions",
            tqdm.format_meter(count, count, count / 1500.12),
            f"  -  Found {count} images", "Bucket sizes for input_images:", f"{size}x{size}: {count} files",
            "1 buckets made", "Caching latents for input_images", " - Keeping latents in memory",
            tqdm.format_meter(count, count, count / 7.1, prefix="Caching latents"),
        ]  # fmt: skip
    lines.append("Generating baseline samples before training")
    return lines


def generated_caption(inputs: dict[str, Any]) -> str:
    prefix, suffix = inputs.get("autocaption_prefix") or "", inputs.get("autocaption_suffix") or ""
    return f"{prefix}A photo of {inputs['trigger_word']}, on a plain background{suffix}"


def final_captions(inputs: dict[str, Any], dataset: Dataset) -> dict[str, str]:
    """Caption file name → text after autocaptioning: what ``train()`` copies into ``captions/``."""
    captions = {posixpath.basename(stem): text for stem, text in dataset.captions.items()}
    if inputs["autocaption"]:
        for image in dataset.images:
            stem = posixpath.splitext(image)[0]
            if stem not in dataset.captions:
                captions[posixpath.basename(stem)] = generated_caption(inputs)
    return {f"{name}.txt": text for name, text in captions.items()}


def output_members(inputs: dict[str, Any], dataset: Dataset) -> list[str]:
    """The paths ``tar -cvf`` puts in ``trained_model.tar`` (and lists in the log)."""
    captions = sorted(f"{JOB_DIR}/captions/{name}" for name in final_captions(inputs, dataset))
    return [f"{JOB_DIR}/", f"{JOB_DIR}/lora.safetensors", f"{JOB_DIR}/config.yaml", f"{JOB_DIR}/captions/", *captions]


def final_lines(inputs: dict[str, Any], dataset: Dataset) -> list[str]:
    lines = ["", f"Saved to {JOB_DIR}/optimizer.pt", *output_members(inputs, dataset)]
    if inputs.get("hf_token") and inputs.get("hf_repo_id"):
        repo = inputs["hf_repo_id"]  # printed only: the fake uploads nothing to any Hub
        lines += [f"Uploading to Hugging Face: {repo}", f"HF Repo URL: https://huggingface.co/{repo}"]
    return lines


def lora_safetensors(rank: int, steps: int) -> bytes:
    """A small but valid safetensors file shaped like a FLUX LoRA of ``rank`` (F32, little-endian)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "name": JOB_NAME, "version": "1.0",
                                               "training_info": json.dumps({"step": steps})}}
    blobs: list[bytes] = []
    offset = 0
    for block in range(2):
        for part, shape in (("lora_A", (rank, 64)), ("lora_B", (64, rank))):
            count = shape[0] * shape[1]
            blob = struct.pack(f"<{count}f", *(((i * 7 + block) % 13 - 6) / 100 for i in range(count)))
            name = f"transformer.single_transformer_blocks.{block}.proj_out.{part}.weight"
            header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
            blobs.append(blob)
            offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)


def trained_model_tar(inputs: dict[str, Any], dataset: Dataset, mtime: float) -> bytes:
    """``trained_model.tar`` as ``tar -cvf`` writes it: the LoRA, ``config.yaml`` and the captions."""
    config = {"job": "custom_job", "config": {"name": JOB_NAME, "process": [process_config(inputs)]},
              "meta": {"name": "[name]", "version": "1.0"}}
    contents = {
        f"{JOB_DIR}/lora.safetensors": lora_safetensors(int(inputs["lora_rank"]), int(inputs["steps"])),
        f"{JOB_DIR}/config.yaml": yaml.safe_dump(config, sort_keys=False).encode(),
    }
    for name, text in final_captions(inputs, dataset).items():
        contents[f"{JOB_DIR}/captions/{name}"] = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in output_members(inputs, dataset):
            info = tarfile.TarInfo(member.rstrip("/"))
            info.mtime = int(mtime)
            if member.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(contents[member]), 0o644
                archive.addfile(info, io.BytesIO(contents[member]))
    return buffer.getvalue()

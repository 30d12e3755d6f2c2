"""Recognise progress in trainer output: tqdm bars, step and epoch counters, Trainer dicts, losses.

Trainers do not agree on a log format, so each line is matched against the forms seen in
ai-toolkit (Replicate's flux trainer), kohya sd-scripts, diffusers and transformers scripts::

    flux_train_replicate:  31%|███       | 310/1000 [02:10<04:51,  2.37it/s, lr: 4.0e-04 loss: 3.215e-01]
    flux_train_replicate: 31%                                (the bare form: a percent, no n/total)
    steps:  45%|████▌     | 450/1000 [05:00<06:06,  1.50it/s, avr_loss=0.123]
    Training: 310it [02:10,  2.37it/s, loss=0.321]          (tqdm without a total)
    step 150/1000 · Step 150 of 1000 · Steps: 45% · epoch 2/10
    {'loss': 0.41, 'learning_rate': 2e-05, 'epoch': 1.5}    (transformers Trainer)
    Total optimization steps = 375 · Num Epochs = 3 · ***** Running training *****

Parsing is stateless: :func:`parse_line` turns one line into :class:`Reading` objects and the
tracker decides what they mean together. A line may hold many ``\\r``-separated tqdm updates;
each one is read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["bar", "steps", "epochs", "trainer", "setup", "loss"]
LabelClass = Literal["training", "other", "unknown"]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_COUNT = r"\d+(?:\.\d+)?[kMGTP]?"
_SCALE = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SEGMENT_SPLIT_RE = re.compile(r"[\r\n]+")

# tqdm with a total: "{desc}: {pct:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]"
_BAR_RE = re.compile(
    rf"(?P<pct>\d{{1,3}}(?:\.\d+)?)%\|[^|]*\|\s*(?P<n>{_COUNT})(?:/(?P<total>{_COUNT}|\?))?"
    r"(?:\s*\[(?P<inner>[^\]]*)\]?)?"
)
# tqdm without a total: "{desc}: {n}{unit} [{elapsed}, {rate}{postfix}]"
_UNKNOWN_TOTAL_RE = re.compile(
    rf"(?:^|(?<=[\s:]))(?P<n>{_COUNT})(?P<unit>[A-Za-z_]*) \[(?P<inner>\d+:\d\d(?::\d\d)?,[^\]]*)\]?"
)
# The bare form of a bar, as some log views print the flux trainer's: "{desc}: {pct}%", perhaps
# followed by tqdm's bracketed part. A "|" after the percent means a cut-off full bar instead.
_BARE_PERCENT_RE = re.compile(
    r"^\s*(?P<label>[^\s:|%][^:|%]{0,79}?)\s*:\s*(?P<pct>\d{1,3}(?:\.\d+)?)%"
    r"(?:\s*\[(?P<inner>[^\]|]*)\]?)?\s*$"
)
_RATE_RE = re.compile(r"\s*(?P<value>\?|\d+(?:\.\d+)?)(?P<scale>[kMGTP]?)(?P<unit>[A-Za-z_]*)/s\s*")
_INVERSE_RATE_RE = re.compile(r"\s*(?P<value>\d+(?:\.\d+)?)s/(?P<unit>[A-Za-z_]+)\s*")

_STEPS_RE = re.compile(r"(?<![A-Za-z])steps?\b\s*[:=#]?\s*\[?\s*(\d+)\s*(?:/|of|out of)\s*(\d+)", re.I)
_STEPS_PERCENT_RE = re.compile(r"(?<![A-Za-z])steps?\b\s*[:=]?\s*(\d{1,3}(?:\.\d+)?)\s*%", re.I)
_EPOCHS_RE = re.compile(r"(?<![A-Za-z])epochs?\b\s*[:=#]?\s*\[?\s*(\d+)\s*(?:/|of|out of)\s*(\d+)", re.I)

_LOSS_RE = re.compile(
    rf"(?<![A-Za-z0-9])(?:(?:train|training|avr|avg|average|mean|running)[_/ ]?)?loss['\"]?\s*[:=]\s*({_NUM})",
    re.I,
)
_NOT_TRAINING_LOSS_PREFIXES = ("val", "eval", "valid", "validation", "test")

_TRAINER_PAIR_RE = re.compile(rf"['\"](\w+)['\"]\s*:\s*({_NUM})")
_TRAINER_KEYS = frozenset({"loss", "train_loss", "epoch", "learning_rate", "eval_loss", "train_runtime"})

_TOTAL_STEPS_RE = re.compile(
    r"(?:total[\s_]+(?:optimi[sz]ation[\s_]+|training[\s_]+|train[\s_]+)?steps?|max[\s_]+(?:train[\s_]+)?steps?)"
    r"\b[^:=\d]{0,40}[:=]\s*(\d[\d,]*)",
    re.I,
)
_TOTAL_EPOCHS_RE = re.compile(
    r"(?:num(?:ber)?[\s_]+(?:of[\s_]+)?(?:train[\s_]+)?epochs|max[\s_]+epochs)\b[^:=\d]{0,40}[:=]\s*(\d[\d,]*)",
    re.I,
)
_TRAINING_BANNER_RE = re.compile(
    r"running training|start(?:ing|ed)? training|training started|begin(?:ning)? training|学習開始", re.I
)

_OTHER_LABEL_RE = re.compile(
    r"load|download|fetch|upload|shard|generat|sampl|valid|eval|\btest|infer|cach|\bmap\b|token|"
    r"preprocess|extract|resolv|sav(?:e|ing)|writ|convert|quantiz|encod|prompt|filter|verif|hash|"
    r"compil|warm|bucket|"
    r"\.(?:safetensors|bin|json|txt|pt|pth|ckpt|gguf|onnx|msgpack|h5|parquet|arrow|zip|tar|gz)\b",
    re.I,
)
_TRAINING_LABEL_RE = re.compile(r"train|steps?\b|epoch|iter|optimi|fine.?tun|lora|dreambooth", re.I)


@dataclass(frozen=True, slots=True)
class Reading:
    """One fact read from a log line.

    ``kind`` says which fields are meaningful:

    - ``bar``: a tqdm bar. ``label`` (its description), ``n``, ``total`` (``None`` when the
      bar has no total), ``percent`` (from n/total, else the printed one), ``rate_per_s``,
      ``loss``, ``counts_bytes`` (a download or upload bar). A bare ``label: 31%`` gives a
      bar with ``n`` and ``total`` ``None`` and the printed ``percent`` (see :func:`is_bare`).
    - ``steps``: ``step 150/1000`` (``n``, ``total``, ``percent``) or ``Steps: 45%`` (``percent``).
    - ``epochs``: ``epoch 2/10`` (``n``, ``total``).
    - ``trainer``: a transformers Trainer dict; ``loss``, ``epoch``, ``n`` (its ``step`` key).
    - ``setup``: announcements before training: ``total_steps``, ``total_epochs``,
      ``training_started``.
    - ``loss``: only a loss.
    """

    kind: Kind
    label: str = ""
    n: float | None = None
    total: float | None = None
    percent: float | None = None
    rate_per_s: float | None = None
    loss: float | None = None
    epoch: float | None = None
    counts_bytes: bool = False
    total_steps: int | None = None
    total_epochs: int | None = None
    training_started: bool = False


def parse_line(line: str) -> list[Reading]:
    """Read every progress fact in one line, including each ``\\r``-separated tqdm update.

    Garbage, blank and partial lines give an empty list; this never raises on text.
    """
    if "\x1b" in line:
        line = _ANSI_RE.sub("", line)
    if "\r" not in line and "\n" not in line:
        return parse_segment(line)
    readings: list[Reading] = []
    for segment in _SEGMENT_SPLIT_RE.split(line):
        readings.extend(parse_segment(segment))
    return readings


def parse_segment(segment: str) -> list[Reading]:
    """Read one ``\\r``/newline-free piece of a line; see :func:`parse_line`."""
    if not segment or segment.isspace():
        return []
    head, trainer = _split_trainer_dict(segment)
    readings = _parse_head(head) if head else []
    if trainer:
        reading = _parse_trainer_dict(trainer)
        if reading is not None:
            readings.append(reading)
    return readings


def classify_label(label: str, *, counts_bytes: bool = False) -> LabelClass:
    """Whether a tqdm bar's description looks like training, clearly not training, or neither.

    Loading, downloading, caching, sampling and validation bars are ``other``; byte-counting
    bars are always ``other``. ``other`` wins over ``training`` (``Loading train data``).
    """
    if counts_bytes or _OTHER_LABEL_RE.search(label):
        return "other"
    if _TRAINING_LABEL_RE.search(label):
        return "training"
    return "unknown"


def extract_loss(text: str) -> float | None:
    """The first training loss in ``text`` (``loss: 3.2e-01``, ``loss=0.3``, ``'train_loss': 0.4``,
    ``avr_loss=0.1``); validation and evaluation losses are skipped."""
    if "loss" not in text and "LOSS" not in text and "Loss" not in text:
        return None
    for match in _LOSS_RE.finditer(text):
        before = text[max(0, match.start() - 12) : match.start()].lower().rstrip(" _/'\"")
        if before.endswith(_NOT_TRAINING_LOSS_PREFIXES):
            continue
        value = _finite(match.group(1))
        if value is not None:
            return value
    return None


def _split_trainer_dict(segment: str) -> tuple[str, str]:
    """Split off a Trainer dict printed after a tqdm update on the same line."""
    if "{" not in segment:
        return segment, ""
    starts = [i for i in (segment.find("{'"), segment.find('{"')) if i >= 0]
    if not starts:
        return segment, ""
    at = min(starts)
    return segment[:at], segment[at:]


def _parse_head(text: str) -> list[Reading]:
    if "%|" in text:
        match = _BAR_RE.search(text)
        if match is not None:
            bar = _bar_reading(text, match, total_text=match.group("total"), printed=match.group("pct"))
            return [bar] if bar is not None else []
    if " [" in text and ("/s" in text or "s/" in text):
        match = _UNKNOWN_TOTAL_RE.search(text)
        if match is not None:
            bar = _bar_reading(text, match, total_text=None, printed=None, unit=match.group("unit"))
            return [bar] if bar is not None else []
    lowered = text.lower()
    readings = _parse_setup(text, lowered)
    if readings:
        return readings
    loss = extract_loss(text)
    if "step" in lowered:
        match = _STEPS_RE.search(text)
        if match is not None:
            n, total = _int(match.group(1)), _int(match.group(2))
            if n is not None and total:
                percent = min(100.0, 100.0 * n / total)
                readings.append(Reading("steps", n=float(n), total=float(total), percent=percent, loss=loss))
        else:
            match = _STEPS_PERCENT_RE.search(text)
            if match is not None:
                percent = float(match.group(1))
                if percent <= 100.0:
                    readings.append(Reading("steps", percent=percent, loss=loss))
    if "epoch" in lowered:
        match = _EPOCHS_RE.search(text)
        if match is not None:
            n, total = _int(match.group(1)), _int(match.group(2))
            if n is not None and total:
                readings.append(Reading("epochs", n=float(n), total=float(total), loss=None if readings else loss))
    if not readings and "%" in text:
        bare = _bare_reading(text)
        if bare is not None:
            return [bare]
    if not readings and loss is not None:
        readings.append(Reading("loss", loss=loss))
    return readings


def is_bare(reading: Reading) -> bool:
    """Whether ``reading`` is a bar's bare form (``flux_train_replicate: 31%``): a printed percent, no counts."""
    return reading.kind == "bar" and reading.n is None and reading.percent is not None


def _bare_reading(text: str) -> Reading | None:
    match = _BARE_PERCENT_RE.match(text)
    if match is None:
        return None
    percent = float(match.group("pct"))
    if percent > 100.0:
        return None
    inner = match.group("inner")
    rate, unit = _rate(inner)
    return Reading(
        "bar",
        label=match.group("label").strip(),
        percent=percent,
        rate_per_s=rate,
        loss=extract_loss(inner) if inner else None,
        counts_bytes=unit.endswith("B") or unit.lower() == "bytes",
    )


def _bar_reading(
    text: str, match: re.Match[str], *, total_text: str | None, printed: str | None, unit: str = ""
) -> Reading | None:
    n = _count(match.group("n"))
    if n is None:
        return None
    if printed is not None and total_text is None:
        return None  # tqdm prints n/total whenever it prints a percent: this line was cut off
    total = _count(total_text) if total_text and total_text != "?" else None
    if total is not None and total <= 0:
        total = None
    printed_percent = float(printed) if printed is not None else None
    if printed_percent is not None and printed_percent > 100.0:
        return None
    percent: float | None
    if total is not None:
        percent = 100.0 * n / total
        # A cut-off line ("310/10" for "310/1000") disagrees with the printed percent.
        if printed_percent is not None and abs(percent - printed_percent) > 1.5 and not (
            percent > 100.0 and printed_percent >= 99.0
        ):
            return None
        percent = min(100.0, percent)
    else:
        percent = printed_percent if total_text is not None else None
    rate, rate_unit = _rate(match.group("inner"))
    unit = rate_unit or unit
    label = text[: match.start()].strip().rstrip(":").strip()
    return Reading(
        "bar",
        label=label,
        n=n,
        total=total,
        percent=percent,
        rate_per_s=rate,
        loss=extract_loss(text[match.end("n") :]),
        counts_bytes=unit.endswith("B") or unit.lower() == "bytes",
    )


def _rate(inner: str | None) -> tuple[float | None, str]:
    """Steps per second from the ``[elapsed<remaining, rate, postfix]`` part of a bar."""
    if not inner:
        return None, ""
    parts = inner.split(",", 2)
    if len(parts) < 2:
        return None, ""
    text = parts[1]
    match = _INVERSE_RATE_RE.fullmatch(text)
    if match is not None:
        seconds = float(match.group("value"))
        return (1.0 / seconds if seconds > 0 else None), match.group("unit")
    match = _RATE_RE.fullmatch(text)
    if match is None:
        return None, ""
    if match.group("value") == "?":
        return None, match.group("unit")
    rate = float(match.group("value")) * _SCALE[match.group("scale")]
    return (rate if math.isfinite(rate) and rate > 0 else None), match.group("unit")


def _parse_setup(text: str, lowered: str) -> list[Reading]:
    total_steps = total_epochs = None
    if "step" in lowered and ("total" in lowered or "max" in lowered):
        match = _TOTAL_STEPS_RE.search(text)
        if match is not None:
            total_steps = _positive_int(match.group(1))
    if "epoch" in lowered and ("num" in lowered or "max" in lowered):
        match = _TOTAL_EPOCHS_RE.search(text)
        if match is not None:
            total_epochs = _positive_int(match.group(1))
    started = ("train" in lowered or "学習" in text) and _TRAINING_BANNER_RE.search(text) is not None
    if total_steps is None and total_epochs is None and not started:
        return []
    return [Reading("setup", total_steps=total_steps, total_epochs=total_epochs, training_started=started)]


def _parse_trainer_dict(text: str) -> Reading | None:
    values: dict[str, float] = {}
    for key, raw in _TRAINER_PAIR_RE.findall(text):
        value = _finite(raw)
        if value is not None and key not in values:
            values[key] = value
    if not _TRAINER_KEYS.intersection(values):
        return None
    loss = values.get("loss", values.get("train_loss"))
    step = values.get("step")
    epoch = values.get("epoch")
    return Reading(
        "trainer",
        n=step if step is not None and step >= 0 else None,
        loss=loss,
        epoch=epoch if epoch is not None and epoch >= 0 else None,
    )


def _count(text: str | None) -> float | None:
    if not text:
        return None
    scale = _SCALE.get(text[-1]) if text[-1].isalpha() else 1.0
    if scale is None:
        return None
    number = text[:-1] if text[-1].isalpha() else text
    value = _finite(number)
    if value is None:
        return None
    value *= scale
    return value if math.isfinite(value) and value >= 0 else None


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _int(text: str) -> int | None:
    """An integer that can be a step count; absurdly long digit runs are garbage, not steps."""
    if not text.isdigit() or len(text) > 15:
        return None
    return int(text)


def _positive_int(text: str) -> int | None:
    value = _int(text.replace(",", ""))
    return value if value else None

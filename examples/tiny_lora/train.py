#!/usr/bin/env python3
"""Tiny LoRA fine-tune that runs on a CPU in seconds.

A 2-layer GPT-2 is initialised locally from a config (random weights, nothing is
downloaded), a byte-level tokenizer is defined below, and a LoRA adapter
(peft, ``target_modules=["c_attn"]``) is trained on the caption files shipped in
``data/``. Progress goes to stderr as a tqdm bar and to stdout as
``step N/TOTAL loss X`` lines. On success ``--output DIR`` holds
``adapter_model.safetensors``, ``adapter_config.json`` (peft ``save_pretrained``)
and ``training_args.json``.

Exit codes: 0 success, 1 training failure (including ``--fail-at-step``),
2 bad input, 3 missing dependency.

    python examples/tiny_lora/train.py --output /tmp/tiny-lora
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

# Never touch the network: everything here is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_OK = 0
EXIT_TRAINING_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_DEPENDENCY = 3

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"

# Byte-level tokenizer: token ids 0..255 are UTF-8 bytes, 256 is end-of-text.
EOS_ID = 256
VOCAB_SIZE = 257
IGNORE_INDEX = -100

# Tiny GPT-2 shape (kept in one place so training_args.json can describe it).
MODEL_SHAPE = {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 128}
# GPT-2's default init (0.02) makes the frozen, tied output head so weak that logits stay
# near-uniform and a LoRA on a *random* base can barely move the loss; a wider init gives the
# base enough "capacity" for the adapter to learn something visible in ~100 steps.
INITIALIZER_RANGE = 0.2
TARGET_MODULES = ["c_attn"]


class BadInput(Exception):
    """Raised for user errors (bad arguments or unusable data)."""


class SimulatedFailure(Exception):
    """Raised by --fail-at-step."""


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8")) + [EOS_ID]


def decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a tiny LoRA adapter on a locally initialised GPT-2 (CPU, seconds).",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="directory to write the adapter and training_args.json into",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="directory of .txt files, one example per line (default: %(default)s)",
    )
    parser.add_argument("--steps", type=positive_int, default=100, help="optimizer steps (default: 100)")
    parser.add_argument("--lr", type=positive_float, default=5e-3, help="learning rate (default: 5e-3)")
    parser.add_argument("--rank", type=positive_int, default=8, help="LoRA rank r (default: 8)")
    parser.add_argument("--alpha", type=positive_float, default=None, help="LoRA alpha (default: 2 * rank)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="examples per step (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--log-every",
        type=positive_int,
        default=10,
        help="print 'step N/TOTAL loss X' to stdout every N steps (default: 10)",
    )
    parser.add_argument(
        "--fail-at-step",
        type=positive_int,
        default=None,
        metavar="N",
        help="simulate a crash at step N and exit non-zero (for testing failure handling)",
    )
    args = parser.parse_args(argv)
    if args.alpha is None:
        args.alpha = float(2 * args.rank)
    if args.fail_at_step is not None and args.fail_at_step > args.steps:
        parser.error(f"--fail-at-step {args.fail_at_step} is beyond --steps {args.steps}")
    return args


def load_examples(data_dir: Path) -> tuple[list[str], list[str]]:
    """Return (examples, file names). One example per non-empty line of each *.txt file."""
    if not data_dir.exists():
        raise BadInput(f"data directory does not exist: {data_dir}")
    if not data_dir.is_dir():
        raise BadInput(f"--data must be a directory, got a file: {data_dir}")
    files = sorted(p for p in data_dir.glob("*.txt") if p.is_file())
    if not files:
        raise BadInput(f"no .txt files in data directory: {data_dir}")
    examples: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path.name} is not valid UTF-8 text: {exc}") from None
        examples.extend(line.strip() for line in text.splitlines() if line.strip())
    if not examples:
        raise BadInput(f"the .txt files in {data_dir} contain no non-empty lines")
    return examples, [p.name for p in files]


def check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise BadInput(f"--output exists and is not a directory: {output}")


def import_deps():
    # peft calls a transformers API that newer transformers deprecates; harmless noise here.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        import peft
        import safetensors  # noqa: F401  (peft writes adapter_model.safetensors with it)
        import torch
        import transformers
        from tqdm.auto import tqdm
    except ImportError as exc:
        print(
            f"error: missing dependency ({exc.name or exc}). Install the example's requirements:\n"
            f"  pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}",
            file=sys.stderr,
        )
        sys.exit(EXIT_MISSING_DEPENDENCY)
    return torch, peft, transformers, tqdm


def make_batch(torch, examples_ids: list[list[int]], indices, block_size: int):
    seqs = [examples_ids[i][:block_size] for i in indices]
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), EOS_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), length), dtype=torch.long)
    labels = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)
    for row, seq in enumerate(seqs):
        t = torch.tensor(seq, dtype=torch.long)
        input_ids[row, : len(seq)] = t
        attention_mask[row, : len(seq)] = 1
        labels[row, : len(seq)] = t
    return input_ids, attention_mask, labels


def lm_loss(torch, model, input_ids, attention_mask, labels, reduction="mean"):
    """Next-token cross-entropy (computed here rather than by transformers, as trainers do)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def mean_loss(torch, model, examples_ids, block_size: int, batch_size: int) -> float:
    """Token-weighted loss over the whole dataset (deterministic; used before/after training)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples_ids), batch_size):
            idx = range(start, min(start + batch_size, len(examples_ids)))
            input_ids, attention_mask, labels = make_batch(torch, examples_ids, idx, block_size)
            total += lm_loss(torch, model, input_ids, attention_mask, labels, reduction="sum").item()
            count += int((labels[:, 1:] != IGNORE_INDEX).sum())
    model.train()
    return total / max(count, 1)


def model_card(summary: dict) -> str:
    """A short README.md for the adapter (replaces peft's empty template)."""
    return f"""---
library_name: peft
pipeline_tag: text-generation
tags:
- lora
- peft
- hubferry-example
---

# tiny LoRA example adapter

LoRA adapter (r={summary["rank"]}, alpha={summary["alpha"]}, target modules {summary["target_modules"]})
trained by hubferry's `examples/tiny_lora/train.py` for {summary["steps"]} steps on
{summary["data"]["examples"]} short captions using the trigger word `hbfrystyle`.

The base model is a {summary["base_model"]["description"]},
config `{json.dumps(summary["base_model"]["config"])}`, seed {summary["seed"]};
{summary["base_model"]["tokenizer"]}. It is a demonstration artifact, not a useful model.

Final training loss {summary["final_loss"]:.4f}; loss over the whole dataset
{summary["eval_loss_before"]:.4f} before training, {summary["eval_loss_after"]:.4f} after.
See `training_args.json` for all settings.
"""


def train(args: argparse.Namespace) -> dict:
    examples, file_names = load_examples(args.data)
    check_output(args.output)
    torch, peft, transformers, tqdm = import_deps()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    block_size = MODEL_SHAPE["n_positions"]

    config = transformers.GPT2Config(
        vocab_size=VOCAB_SIZE,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=INITIALIZER_RANGE,
        **MODEL_SHAPE,
    )
    base = transformers.GPT2LMHeadModel(config)  # random init from the seed, no download
    lora_config = peft.LoraConfig(
        task_type="CAUSAL_LM",
        target_modules=TARGET_MODULES,
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        fan_in_fan_out=True,  # GPT-2 uses Conv1D layers
    )
    model = peft.get_peft_model(base, lora_config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    print(
        f"model: tiny GPT-2 {MODEL_SHAPE}, {n_total:,} params, {n_trainable:,} trainable (LoRA r={args.rank})"
    )
    print(f"data: {len(examples)} examples from {len(file_names)} files; steps={args.steps} lr={args.lr}")
    sys.stdout.flush()

    examples_ids = [encode(e) for e in examples]
    eval_loss_before = mean_loss(torch, model, examples_ids, block_size, 64)

    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 1.0 - step / args.steps,  # linear decay, like HF Trainer's default
    )
    generator = torch.Generator().manual_seed(args.seed)
    batch_size = min(args.batch_size, len(examples_ids))

    first_loss = None
    loss = float("nan")
    history: list[list[float]] = []
    start = time.perf_counter()
    with tqdm(total=args.steps, desc="train", file=sys.stderr, dynamic_ncols=True) as bar:
        for step in range(1, args.steps + 1):
            if args.fail_at_step is not None and step == args.fail_at_step:
                raise SimulatedFailure(f"simulated failure at step {step}/{args.steps} (--fail-at-step)")
            idx = torch.randperm(len(examples_ids), generator=generator)[:batch_size].tolist()
            input_ids, attention_mask, labels = make_batch(torch, examples_ids, idx, block_size)
            step_loss = lm_loss(torch, model, input_ids, attention_mask, labels)
            step_loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            loss = step_loss.item()
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at step {step}; try a lower --lr")
            if first_loss is None:
                first_loss = loss
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.update(1)
            if step % args.log_every == 0 or step == 1 or step == args.steps:
                history.append([step, round(loss, 6)])
                bar.write(f"step {step}/{args.steps} loss {loss:.4f}", file=sys.stdout)
                sys.stdout.flush()
    train_seconds = time.perf_counter() - start

    eval_loss_after = mean_loss(torch, model, examples_ids, block_size, 64)
    print(f"eval loss (all {len(examples)} examples): {eval_loss_before:.4f} -> {eval_loss_after:.4f}")

    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.output), safe_serialization=True)

    summary = {
        "steps": args.steps,
        "lr": args.lr,
        "lr_schedule": "linear decay to 0",
        "optimizer": "AdamW (weight_decay=0, grad clip 1.0)",
        "batch_size": batch_size,
        "rank": args.rank,
        "alpha": args.alpha,
        "lora_dropout": 0.0,
        "target_modules": TARGET_MODULES,
        "seed": args.seed,
        "base_model": {
            "architecture": "GPT2LMHeadModel",
            "description": "tiny GPT-2 randomly initialised from a local config (no pretrained weights)",
            "init_seed": args.seed,
            "config": {**MODEL_SHAPE, "vocab_size": VOCAB_SIZE},
            "parameters": n_total,
            "tokenizer": "byte-level: UTF-8 bytes 0-255 plus end-of-text id 256 (defined in train.py)",
        },
        "trainable_parameters": n_trainable,
        "data": {"files": file_names, "examples": len(examples)},
        "first_loss": first_loss,
        "final_loss": loss,
        "eval_loss_before": eval_loss_before,
        "eval_loss_after": eval_loss_after,
        "loss_history": history,
        "train_seconds": round(train_seconds, 3),
        "versions": {
            "torch": torch.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
        },
    }
    (args.output / "training_args.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (args.output / "README.md").write_text(model_card(summary), encoding="utf-8")
    written = "adapter_model.safetensors, adapter_config.json, training_args.json, README.md"
    print(f"wrote {written} to {args.output}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # exits with code 2 on usage errors
    try:
        train(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SimulatedFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - report anything else clearly, with a non-zero code
        print(f"error: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""The training command the pod agent runs: a validated SFT/DPO/ORPO config mapped onto trl's trainers.

::

    python -m hubferry.trainers.agent.trl_train --config config.json --data FILE_OR_HUB_ID --output DIR

``--config`` is a JSON file holding the training config (or a ``spec`` whose ``config`` key holds it),
``--data`` a local ``.jsonl``/``.parquet`` file or a Hub dataset id (its ``train`` split). The model is
``model.base`` as transformers resolves it (a local folder of that name, else the Hub at ``HF_ENDPOINT``),
trained with a peft LoRA adapter or fully (``full_finetune``). Progress goes to stdout as lines hubferry's
tracker parses: ``Total optimization steps = M`` before the first step, then at every logging step
``step 3/500 loss: 1.2345 lr: 0.0002 epoch: 0.01`` (and a bare ``step N/M`` when a step ends long after the
last line). On success ``--output`` holds the adapter (or the model), the tokenizer and ``training_args.json``
(read by the model card), nothing else: checkpoints and trainer state stay in ``--work-dir``.

Exit codes: 0 trained; 1 the training failed; 2 bad config or dataset; 3 a dependency is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from hubferry.errors import ValidationError
from hubferry.training_config import (
    DpoConfig,
    OrpoConfig,
    TrainingConfigModel,
    check_rows,
    parse,
    read_rows,
    required_columns,
)

EXIT_OK = 0
EXIT_TRAINING_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_DEPENDENCY = 3

#: Loss lines per training: the trainer logs every 1/LOG_LINES of the steps (at least every step).
LOG_LINES = 100
#: A ``step N/M`` line is printed after a step when nothing was printed for this long (slow steps).
QUIET_PROGRESS_S = 10.0
#: Files of the output folder that are published; everything else the trainers write there is removed
#: (peft's README.md, so hubferry's card is generated; the pickled ``training_args.bin``).
UNPUBLISHED = ("README.md", "training_args.bin")
#: Columns each method trains on; other columns of the dataset are dropped before tokenizing.
_COLUMNS = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"),
            "preference": ("prompt", "chosen", "rejected")}


class BadInput(Exception):
    """The config or the dataset cannot be trained on; the message says why."""


def _say(text: str) -> None:
    print(text, flush=True)


def read_config(path: Path) -> TrainingConfigModel:
    """The validated training config in the JSON file ``path`` (the config itself, or a spec holding it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read the config {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BadInput(f"the config {path} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    try:
        return parse(data, source=str(path))
    except ValidationError as exc:
        raise BadInput(str(exc)) from None


def _rows_kind(method: str, columns: list[str]) -> str:
    if method != "sft":
        return "preference"
    return "messages" if "messages" in columns else "prompt_completion"


def load_rows(data: str, config: TrainingConfigModel) -> Any:
    """The training rows as a ``datasets.Dataset``: a local JSONL/Parquet file, or a Hub dataset's train split.

    The first rows are checked against the method's columns before anything is tokenized.
    """
    import datasets

    datasets.disable_progress_bars()
    path = Path(data)
    if path.suffix.lower() in (".jsonl", ".parquet"):
        try:
            check_rows(config.method, read_rows(path), source=path.name)
        except ValidationError as exc:
            raise BadInput(str(exc)) from None
        builder = "parquet" if path.suffix.lower() == ".parquet" else "json"
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
    else:
        try:
            dataset = datasets.load_dataset(data, split="train")
        except FileNotFoundError as exc:  # datasets' DatasetNotFoundError is a FileNotFoundError
            raise BadInput(f"dataset {data} was not found on the Hub ({exc}); a private dataset needs a "
                           "token in the pod, or stage a local file instead") from None
        except ValueError as exc:  # e.g. no train split
            raise BadInput(f"dataset {data} has no usable train split: {exc}") from None
        try:
            check_rows(config.method, (dataset[i] for i in range(min(len(dataset), 100))), source=data)
        except ValidationError as exc:
            raise BadInput(str(exc)) from None
    kind = _rows_kind(config.method, list(dataset.column_names))
    keep = _COLUMNS[kind]
    missing = [c for c in keep if c not in dataset.column_names]
    if missing:
        raise BadInput(f"dataset {data} has no {', '.join(missing)} column ({config.method.upper()} needs "
                       f"{required_columns(config.method)})")
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def _precision() -> dict[str, bool]:
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": False, "fp16": False}


def trainer_arguments(config: TrainingConfigModel, work_dir: Path) -> Any:
    """The trl ``SFTConfig``/``DPOConfig``/``ORPOConfig`` for ``config``; checkpoints go to ``work_dir``."""
    t = config.training
    common: dict[str, Any] = {
        "output_dir": str(work_dir), "learning_rate": t.learning_rate,
        "per_device_train_batch_size": t.per_device_batch_size, "gradient_accumulation_steps": t.gradient_accumulation,
        "max_steps": t.max_steps if t.max_steps is not None else -1,
        "num_train_epochs": t.epochs if t.epochs is not None else 1.0,
        "logging_strategy": "steps", "logging_steps": 1.0 / LOG_LINES, "save_strategy": "no", "report_to": "none",
        "disable_tqdm": True, "max_length": t.max_seq_len, "seed": 0, "dataloader_num_workers": 0,
        **_precision(),
    }
    if config.method == "sft":
        from trl import SFTConfig

        return SFTConfig(**common)
    if isinstance(config, DpoConfig):
        from trl import DPOConfig as TrlDpoConfig

        return TrlDpoConfig(**common, beta=config.dpo.beta)
    assert isinstance(config, OrpoConfig)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common, beta=config.orpo.beta)


def _trainer_class(method: str) -> Any:
    if method == "sft":
        from trl import SFTTrainer

        return SFTTrainer
    if method == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        """Prints the lines hubferry's tracker reads: the total first, then step and loss."""

        def __init__(self) -> None:
            self.last_line = time.monotonic()

        def _print(self, text: str) -> None:
            _say(text)
            self.last_line = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._print("***** Running training *****")
            self._print(f"Total optimization steps = {state.max_steps}")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logs = logs or {}
            loss = logs.get("loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                named = (("learning_rate", "lr"), ("epoch", "epoch"))
                extra = "".join(f" {name}: {logs[key]:.4g}" for key, name in named
                                if isinstance(logs.get(key), (int, float)))
                self._print(f"step {state.global_step}/{state.max_steps} loss: {loss:.4f}{extra}")
            elif isinstance(logs.get("train_loss"), (int, float)):
                self._print(f"training done: step {state.global_step}/{state.max_steps} "
                            f"train_loss: {logs['train_loss']:.4f}")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.monotonic() - self.last_line >= QUIET_PROGRESS_S:
                self._print(f"step {state.global_step}/{state.max_steps}")

    return ProgressLines()


def _describe(config: TrainingConfigModel, data: str, steps: int, train_loss: float | None) -> dict[str, Any]:
    """``training_args.json``: what the model card shows (scalars only)."""
    t = config.training
    described: dict[str, Any] = {
        "base_model": config.model.base, "method": config.method,
        "dataset": data if not Path(data).suffix else Path(data).name,
        "learning_rate": t.learning_rate, "per_device_batch_size": t.per_device_batch_size,
        "gradient_accumulation": t.gradient_accumulation, "max_seq_len": t.max_seq_len, "steps": steps,
        "adapter": "full fine-tune" if config.lora is None else "lora",
    }
    if t.max_steps is not None:
        described["max_steps"] = t.max_steps
    else:
        described["num_epochs"] = t.epochs
    if config.lora is not None:
        described.update(lora_r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout)
    if isinstance(config, DpoConfig):
        described["beta"] = config.dpo.beta
    elif isinstance(config, OrpoConfig):
        described["beta"] = config.orpo.beta
    if train_loss is not None and math.isfinite(train_loss):
        described["train_loss"] = round(train_loss, 6)
    return described


def train(config: TrainingConfigModel, data: str, output: Path, work_dir: Path) -> None:
    """Train ``config`` on ``data`` and leave the result (adapter or model, tokenizer, description) in ``output``."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    dataset = load_rows(data, config)
    _say(f"dataset: {len(dataset)} rows ({', '.join(dataset.column_names)})")
    base = config.model.base
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except OSError as exc:  # not a local folder, not on the Hub (or private), no tokenizer files
        raise BadInput(f"cannot load the tokenizer of model.base {base} (a local folder, else {endpoint}): "
                       f"{str(exc).splitlines()[0][:300]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if "messages" in dataset.column_names and not tokenizer.chat_template:
        raise BadInput(f"{base} has no chat template, which messages rows need: use prompt/completion rows, "
                       "or a base model with a chat template (an -Instruct model)")
    args = trainer_arguments(config, work_dir)
    # Half-precision weights for an adapter (peft keeps the adapter itself in fp32); a full fine-tune under
    # fp16 autocast needs fp32 weights, or the gradient scaler refuses to unscale fp16 gradients.
    dtype = "bfloat16" if args.bf16 else "float16" if args.fp16 and config.lora is not None else "float32"
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except OSError as exc:
        raise BadInput(f"cannot load model.base {base} (a local folder, else {endpoint}): "
                       f"{str(exc).splitlines()[0][:300]}") from None
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules, task_type="CAUSAL_LM",
        )
    trainer = _trainer_class(config.method)(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
        callbacks=[_progress_callback()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its dicts hold strings; the progress lines say the same
    result = trainer.train()
    output.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(output))
    tokenizer.save_pretrained(str(output))
    for name in UNPUBLISHED:
        (output / name).unlink(missing_ok=True)
    description = _describe(config, data, int(result.global_step), getattr(result, "training_loss", None))
    (output / "training_args.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    _say(f"saved {'adapter' if config.lora is not None else 'model'} and tokenizer to {output}")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hubferry.trainers.agent.trl_train",
                                     description="Fine-tune a causal LM with trl (SFT, DPO, ORPO) from a hubferry "
                                                 "training config.")
    parser.add_argument("--config", required=True, type=Path, help="JSON training config (or a spec holding one)")
    parser.add_argument("--data", required=True, help="a local .jsonl/.parquet file or a Hub dataset id")
    parser.add_argument("--output", required=True, type=Path, help="where the adapter/model and tokenizer go")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="trainer state and checkpoints, never published (default: a temporary folder beside "
                             "OUTPUT, removed at the end)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit code (see the module docstring)."""
    args = _arguments(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix=".trl-work-", dir=args.output.parent))
    try:
        config = read_config(args.config)
        _say(config.summary())
        started = time.monotonic()
        train(config, args.data, args.output, work_dir)
        _say(f"trained in {time.monotonic() - started:.1f}s")
    except BadInput as exc:
        _say(f"error: {exc}")
        return EXIT_BAD_INPUT
    except ImportError as exc:
        _say(f"error: a training dependency is missing: {exc} (install hubferry[train])")
        return EXIT_MISSING_DEPENDENCY
    except KeyboardInterrupt:
        _say("error: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the training's own failure: report it, exit 1
        traceback.print_exc()
        _say(f"error: training failed: {type(exc).__name__}: {exc}")
        return EXIT_TRAINING_FAILED
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

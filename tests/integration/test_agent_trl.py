"""The pod agent's training command (hubferry.trainers.agent.trl_train) through the real trl trainers, on CPU.

A tiny Llama (tests/fixtures/tiny_llm.py) is trained for a few steps with SFT (``messages`` rows, LoRA),
DPO and ORPO (``prompt``/``chosen``/``rejected``, LoRA) and a full SFT fine-tune (``prompt``/``completion``);
each must leave trained weights and the tokenizer in the output, nothing else, and print progress that
hubferry's own tracker reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.tiny_llm import tiny_llm  # noqa: F401 - the session fixture
from hubferry.tracking import ProgressTracker
from hubferry.trainers.agent import trl_train

SFT_ROWS = [
    {"messages": [{"role": "user", "content": "what color is the sky ?"},
                  {"role": "assistant", "content": "the sky is blue ."}]},
    {"messages": [{"role": "system", "content": "you are kind ."}, {"role": "user", "content": "hello"},
                  {"role": "assistant", "content": "hi ! how are you ?"}]},
    {"messages": [{"role": "user", "content": "tell me a story"},
                  {"role": "assistant", "content": "one day a small cat saw the moon ."}]},
]
PREFERENCE_ROWS = [
    {"prompt": "what color is the sky ?", "chosen": "the sky is blue .", "rejected": "the sky is green ."},
    {"prompt": "is the sun hot ?", "chosen": "yes the sun is very hot .", "rejected": "no it is cold ."},
    {"prompt": "say hello", "chosen": "hello !", "rejected": "goodbye ."},
]
COMPLETION_ROWS = [
    {"prompt": "the cat", "completion": "sleeps in the sun ."},
    {"prompt": "the dog", "completion": "runs fast ."},
]
UNPUBLISHED = {"README.md", "training_args.bin", "checkpoint-1", "checkpoint-3", "runs"}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def job(method: str, *, full: bool = False, steps: int = 3) -> dict[str, object]:
    config: dict[str, object] = {
        "method": method, "model": {"base": "local/tiny-llm"}, "dataset": "data.jsonl",
        "training": {"max_steps": steps, "learning_rate": 5e-3, "per_device_batch_size": 2, "max_seq_len": 64},
    }
    if full:
        config["full_finetune"] = True
    else:
        config["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    if method in ("dpo", "orpo"):
        config[method] = {"beta": 0.2}
    return config


@pytest.fixture
def workdir(tmp_path: Path, tiny_llm: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A folder holding ``local/tiny-llm`` (so ``model.base = "local/tiny-llm"`` resolves there), as cwd."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "tiny-llm").symlink_to(tiny_llm, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the network (subprocesses)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # (this process: read when it was imported)
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    return tmp_path


def tracked(output: str, total: int) -> ProgressTracker:
    tracker = ProgressTracker()
    for line in output.splitlines():
        tracker.feed(line)
    snapshot = tracker.snapshot()
    assert snapshot.stage == "training", output
    assert (snapshot.step, snapshot.total_steps, snapshot.percent) == (total, total, 100.0), output
    assert snapshot.loss is not None and snapshot.loss > 0
    return tracker


def lora_b_norm(folder: Path) -> float:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert b, list(tensors)
    return float(sum(t.float().abs().sum() for t in b))


def test_sft_on_messages_through_the_command_line(workdir: Path) -> None:
    data = write_jsonl(workdir / "sft.jsonl", SFT_ROWS)
    (workdir / "spec.json").write_text(json.dumps({"job_id": "j1", "config": job("sft")}))  # a spec holding it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "hubferry.trainers.agent.trl_train", "--config", "spec.json", "--data", str(data),
         "--output", "out"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tracked(done.stdout, 3)
    assert "Total optimization steps = 3" in done.stdout
    out = workdir / "out"
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training_args.json"} <= names
    assert not names & UNPUBLISHED, names
    assert lora_b_norm(out) > 0  # LoRA B starts at zero: only training moves it
    described = json.loads((out / "training_args.json").read_text())
    assert described["base_model"] == "local/tiny-llm" and described["method"] == "sft"
    assert described["steps"] == 3 and described["dataset"] == "sft.jsonl"
    assert not [p for p in workdir.iterdir() if p.name.startswith(".trl-work-")]  # its work folder is gone
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(out)).chat_template  # the tokenizer travels with the adapter


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_methods_train_an_adapter(workdir: Path, method: str, capsys: pytest.CaptureFixture[str]) -> None:
    if method == "orpo":  # a Parquet dataset, as staged from a local .parquet file
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = workdir / "prefs.parquet"
        pq.write_table(pa.Table.from_pylist(PREFERENCE_ROWS), data)
    else:
        data = write_jsonl(workdir / "prefs.jsonl", PREFERENCE_ROWS)
    (workdir / "config.json").write_text(json.dumps(job(method)))
    code = trl_train.main(["--config", "config.json", "--data", str(data), "--output", str(workdir / method)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    tracked(printed, 3)
    assert f"{method.upper()} of local/tiny-llm" in printed
    assert lora_b_norm(workdir / method) > 0
    assert json.loads((workdir / method / "training_args.json").read_text())["beta"] == 0.2


def test_full_finetune_on_prompt_completion_writes_the_model(workdir: Path, tiny_llm: Path,  # noqa: F811
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    data = write_jsonl(workdir / "pc.jsonl", COMPLETION_ROWS)
    (workdir / "config.json").write_text(json.dumps(job("sft", full=True, steps=2)))
    code = trl_train.main(["--config", "config.json", "--data", str(data), "--output", str(workdir / "full")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    tracked(printed, 2)
    names = {p.name for p in (workdir / "full").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and "adapter_config.json" not in names
    before = load_file(str(tiny_llm / "model.safetensors"))
    after = load_file(str(workdir / "full" / "model.safetensors"))
    changed = [k for k in before if k in after and not before[k].equal(after[k].to(before[k].dtype))]
    assert changed, "a full fine-tune changes the base weights"


def test_bad_inputs_exit_2_naming_the_problem(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_rejected = write_jsonl(workdir / "prefs.jsonl", [{"prompt": "hi", "chosen": "hello"}])
    (workdir / "dpo.json").write_text(json.dumps(job("dpo")))
    assert trl_train.main(["--config", "dpo.json", "--data", str(no_rejected), "--output", "o"]) == 2
    assert "row 1 has no 'rejected' column" in capsys.readouterr().out
    (workdir / "bad.json").write_text(json.dumps({**job("sft"), "training": {"num_epochs": 1, "max_steps": 3}}))
    assert trl_train.main(["--config", "bad.json", "--data", str(no_rejected), "--output", "o"]) == 2
    assert "not both" in capsys.readouterr().out
    (workdir / "broken.json").write_text("{")
    assert trl_train.main(["--config", "broken.json", "--data", str(no_rejected), "--output", "o"]) == 2
    assert "is not JSON" in capsys.readouterr().out
    messages = write_jsonl(workdir / "sft.jsonl", SFT_ROWS)
    (workdir / "missing.json").write_text(json.dumps({**job("sft"), "model": {"base": "nobody/no-such-model"}}))
    assert trl_train.main(["--config", "missing.json", "--data", str(messages), "--output", "o"]) == 2
    assert "cannot load the tokenizer of model.base nobody/no-such-model" in capsys.readouterr().out
    plain = workdir / "local" / "plain"  # the tiny model without its chat template
    shutil.copytree(workdir / "local" / "tiny-llm", plain)
    (plain / "chat_template.jinja").unlink()
    (workdir / "plain.json").write_text(json.dumps({**job("sft"), "model": {"base": "local/plain"}}))
    assert trl_train.main(["--config", "plain.json", "--data", str(messages), "--output", "o"]) == 2
    assert "has no chat template, which messages rows need" in capsys.readouterr().out
    assert not (workdir / "o").exists()

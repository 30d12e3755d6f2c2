"""End-to-end test of examples/tiny_lora/train.py: a real (tiny) LoRA fine-tune on the CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "tiny_lora" / "train.py"
STEPS = 30


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("tiny_lora") / "adapter"
    proc = run_script("--output", str(out), "--steps", str(STEPS), "--seed", "0", "--log-every", "5")
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return out, proc


def test_writes_adapter_files(trained):
    out, _ = trained
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_args.json"):
        assert (out / name).is_file(), f"missing {name}"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 8
    assert "c_attn" in config["target_modules"]


def test_safetensors_has_trained_lora_tensors(trained):
    out, _ = trained
    tensors = safetensors_torch.load_file(str(out / "adapter_model.safetensors"))
    a_keys = [k for k in tensors if "lora_A" in k]
    b_keys = [k for k in tensors if "lora_B" in k]
    assert a_keys and b_keys, f"no LoRA tensors in {sorted(tensors)}"
    # peft initialises lora_B to zeros, so non-zero lora_B means training changed the weights.
    for key in b_keys:
        assert torch.count_nonzero(tensors[key]) > 0, f"{key} is still all zeros"


def test_training_args_and_loss_decreases(trained):
    out, proc = trained
    args = json.loads((out / "training_args.json").read_text())
    for field in ("steps", "lr", "rank", "alpha", "seed", "base_model", "first_loss", "final_loss"):
        assert field in args, f"training_args.json lacks {field}"
    assert args["steps"] == STEPS and args["seed"] == 0 and args["rank"] == 8
    assert args["final_loss"] < args["first_loss"]
    assert args["eval_loss_after"] < args["eval_loss_before"]

    # stdout progress lines: "step N/TOTAL loss X", first and last included.
    logged = [
        (int(m.group(1)), int(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^step (\d+)/(\d+) loss ([0-9.]+)$", proc.stdout, re.MULTILINE)
    ]
    assert len(logged) >= 3, proc.stdout
    assert all(total == STEPS for _, total, _ in logged)
    assert logged[0][0] == 1 and logged[-1][0] == STEPS
    assert logged[-1][2] < logged[0][2], "final loss should be lower than the first loss"
    assert abs(logged[-1][2] - args["final_loss"]) < 1e-3

    # Nothing secret-looking or machine-specific in the recorded arguments.
    text = json.dumps(args)
    for word in ("hf_token", "api_key", "password", "secret", "authorization"):
        assert word not in text.lower()
    if len(str(Path.home())) > 1:
        assert str(Path.home()) not in text
    assert str(out) not in text


def test_stderr_has_tqdm_bar_with_loss(trained):
    _, proc = trained
    # tqdm redraws with carriage returns, e.g. "train:  50%|█████     | 15/30 [00:00<00:00, ..., loss=3.21]"
    frames = re.split(r"[\r\n]", proc.stderr)
    bars = [f for f in frames if re.search(rf"\b\d+/{STEPS} \[", f)]
    assert bars, f"no tqdm bar in stderr:\n{proc.stderr[-2000:]}"
    assert any(f"{STEPS}/{STEPS}" in f for f in bars), "bar never reached n == total"
    assert any(re.search(r"loss=[0-9.]+", f) for f in bars), "bar postfix lacks loss"


def test_fail_at_step_exits_nonzero(tmp_path: Path):
    out = tmp_path / "adapter"
    proc = run_script("--output", str(out), "--steps", "10", "--fail-at-step", "3")
    assert proc.returncode != 0
    assert "--fail-at-step" in proc.stderr and "step 3/10" in proc.stderr
    assert not (out / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--data", "/nonexistent/tiny_lora_data"],
        ["--steps", "0"],
        ["--lr", "not-a-number"],
        ["--steps", "5", "--fail-at-step", "6"],
    ],
)
def test_bad_input_exits_nonzero_with_message(tmp_path: Path, extra: list[str]):
    proc = run_script("--output", str(tmp_path / "adapter"), *extra, timeout=60)
    assert proc.returncode != 0
    assert "error" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr

"""``hubferry config check``: exit 0 with a summary for a valid config, 2 with every problem listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

DPO_LOCAL = """
method = "dpo"
dataset = "data/prefs.jsonl"
[model]
base = "Qwen/Qwen2.5-0.5B-Instruct"
[training]
max_steps = 20
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HUBFERRY_HOME": str(tmp_path / "home")}


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubferry", "config", "check", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_examples_are_valid_and_summarised(env: dict[str, str]) -> None:
    result = check(env, str(EXAMPLES / "runpod_dpo.toml"))
    assert result.returncode == 0, result.stderr
    assert "DPO of Qwen/Qwen2.5-0.5B-Instruct on trl-lib/ultrafeedback_binarized: 500 steps" in result.stderr
    assert "LoRA r=8" in result.stderr
    result = check(env, str(EXAMPLES / "runpod_sft.toml"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["config"]["method"] == "sft"
    assert report["config"]["model"]["base"] == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_every_problem_is_listed_and_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    job = tmp_path / "job.toml"
    job.write_text("num_epochs = 3\n" + DPO_LOCAL + "learnig_rate = 1e-4\n[orpo]\nbeta = 0.1\n")
    result = check(env, str(job), "--json")
    assert result.returncode == 2
    assert "num_epochs belongs under training:" in result.stderr
    assert "training.learnig_rate is not a known key; did you mean training.learning_rate?" in result.stderr
    assert 'orpo.beta is only allowed with method = "orpo"' in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["error"]["field"] == "num_epochs"
    assert [p["field"] for p in report["problems"]] == ["num_epochs", "training.learnig_rate", "orpo.beta"]


def test_local_dataset_columns_are_checked(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "job.toml").write_text(DPO_LOCAL)
    (tmp_path / "data").mkdir()
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}, {"prompt": "hi", "chosen": "hello"}]
    (tmp_path / "data" / "prefs.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = check(env, str(tmp_path / "job.toml"))
    assert result.returncode == 2
    assert "row 2 has no 'rejected' column" in result.stderr
    (tmp_path / "data" / "prefs.jsonl").write_text(json.dumps(rows[0]) + "\n")
    result = check(env, str(tmp_path / "job.toml"))
    assert result.returncode == 0, result.stderr
    assert "first 1 rows have the columns DPO needs" in result.stderr


def test_missing_dataset_file_and_bad_yaml(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "job.toml").write_text(DPO_LOCAL)
    result = check(env, str(tmp_path / "job.toml"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "job.yaml").write_text("method: sft\n  model: x\n")
    result = check(env, str(tmp_path / "job.yaml"))
    assert result.returncode == 2 and "line 2" in result.stderr

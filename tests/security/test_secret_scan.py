"""Attacks on the secret scan: every way a credential slipped through (published with exit 0) before.

Each case hides a token the way real training outputs do: dotenv variants, files without extension,
notebooks, safetensors metadata, JSON escapes, glued names, UTF-16, big logs, gzip, and the push
token itself inside binary weights.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi

import hubferry
from hubferry.config import load_settings
from hubferry.errors import ValidationError
from hubferry.hub import manifest, secret_scan

MiB = 1024 * 1024
HF = "hf_" + "Zq3" * 11 + "x"  # 34 characters after hf_
PUSH_TOKEN = "push-token-" + "s" * 30  # a token of no recognisable shape: only found literally


def _findings(tmp_path: Path, files: dict[str, bytes], literals=(PUSH_TOKEN,)) -> dict[str, list[str]]:
    folder = tmp_path / "out"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    _files, found = manifest.hash_all(manifest.select_paths(folder), git_sha1_limit=10 * MiB, scan=list(literals))
    result: dict[str, list[str]] = {}
    for finding in found:
        result.setdefault(finding.path, []).append(finding.kind)
    return result


@pytest.mark.parametrize("name", [".env.local", ".env.production", "prod.env", ".envrc", ".env", "secrets"])
def test_dotenv_variants_and_files_without_extension(tmp_path, name):
    assert _findings(tmp_path, {name: f"HF_TOKEN={HF}\n".encode()}) == {name: ["Hugging Face token"]}


def test_a_notebook_output_cell(tmp_path):
    notebook = {"cells": [{"cell_type": "code", "source": ["import os\n"], "outputs": [
        {"output_type": "stream", "text": [f"logged in with {HF}\n"]}]}], "nbformat": 4}
    assert _findings(tmp_path, {"train.ipynb": json.dumps(notebook).encode()}) == {
        "train.ipynb": ["Hugging Face token"]}


def test_safetensors_metadata_header(tmp_path):
    header = json.dumps({"__metadata__": {"training_cmd": f"--hf-token {HF}"},
                         "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(header)) + header + os.urandom(8)
    assert _findings(tmp_path, {"model.safetensors": data}) == {"model.safetensors": ["Hugging Face token"]}


def test_tokens_inside_json_unicode_escapes(tmp_path):
    escaped = "".join(f"\\u{ord(c):04x}" for c in HF)
    assert _findings(tmp_path, {"trainer_state.json": f'{{"log": "{escaped}"}}'.encode()}) == {
        "trainer_state.json": ["Hugging Face token"]}


def test_tokens_glued_to_other_text(tmp_path):
    found = _findings(tmp_path, {"args.txt": f"--key_{HF}_end".encode(), "a.yaml": f"x: 1{HF}".encode()})
    assert found == {"args.txt": ["Hugging Face token"], "a.yaml": ["Hugging Face token"]}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_text_with_or_without_bom(tmp_path, encoding):
    text = f"line one\nline two\nHF_TOKEN={HF}\n".encode(encoding)
    found = manifest.hash_all(
        manifest.select_paths(_write(tmp_path, {"notes.txt": text})), git_sha1_limit=MiB, scan=[])[1]
    assert [(f.kind, f.line) for f in found] == [("Hugging Face token", 3)]


def _write(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "w"
    folder.mkdir(exist_ok=True)
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    return folder


def test_text_over_10_mib_is_scanned_to_the_end_and_across_chunk_borders(tmp_path):
    line = b"step 1 loss 0.5 lr 0.0001\n"
    body = line * ((11 * MiB) // len(line))
    pad = MiB - (len(body) % MiB) - 10  # the token straddles a 1 MiB read boundary
    data = body + b"x" * pad + f" {HF}\n".encode()
    found = manifest.hash_all(manifest.select_paths(_write(tmp_path, {"train.log": data})),
                              git_sha1_limit=MiB, scan=[])[1]
    assert [(f.kind, f.line) for f in found] == [("Hugging Face token", body.count(b"\n") + 1)]


def test_gzipped_json_and_gzip_bombs(tmp_path):
    found = _findings(tmp_path, {
        "state.json.gz": gzip.compress(json.dumps({"token": HF}).encode()),
        "events.log.gz": gzip.compress(b"a\n" * 1000 + f"export HF_TOKEN={HF}".encode()),
        "bomb.json.gz": gzip.compress(b" " * (200 * MiB)),
    })
    assert found["state.json.gz"] == ["Hugging Face token"] and found["events.log.gz"] == ["Hugging Face token"]
    assert found["bomb.json.gz"][0].startswith("content that cannot be scanned")


def test_the_push_token_anywhere_in_a_binary_even_across_read_chunks(tmp_path):
    weights = os.urandom(MiB - 7) + PUSH_TOKEN.encode() + os.urandom(4096)
    found = _findings(tmp_path, {"pytorch_model.bin": weights, "clean.bin": os.urandom(3 * MiB)})
    assert found == {"pytorch_model.bin": [secret_scan.PUSH_TOKEN]}


def test_other_providers_keys(tmp_path):
    files = {
        "replicate.env": ("REPLICATE_API_TOKEN=r8_" + "R" * 37).encode(),
        "runpod.toml": ("api_key = 'rpa_" + "P" * 40 + "'").encode(),
        "aws.ini": b"aws_access_key_id = AKIAABCDEFGHIJKLMNOP\naws_secret_access_key = " + b"S" * 40,
        "wandb.py": b'wandb.login(key="' + b"0123456789abcdef" * 2 + b'01234567")',
        "netrc": b"machine api.wandb.ai\n  login user\n  password " + b"ab" * 20 + b"\n",
    }
    found = _findings(tmp_path, files)
    assert found == {
        "replicate.env": ["Replicate token"], "runpod.toml": ["RunPod API key"],
        "aws.ini": ["AWS access key id", "AWS secret access key"], "wandb.py": ["Weights & Biases API key"],
        "netrc": ["Weights & Biases API key (netrc)"],
    }


def test_forty_hex_digits_alone_are_not_a_wandb_key_and_weights_are_not_text(tmp_path):
    files = {
        "config.json": json.dumps({"_commit_hash": "ab" * 20, "sha": "cd" * 20}).encode(),
        "weights.bin": ("hf_" + "a" * 34).encode(),  # binary formats: only the push token is looked for
        "model.safetensors": struct.pack("<Q", 2) + b"{}" + os.urandom(MiB),
    }
    assert _findings(tmp_path, files) == {}


@pytest.fixture()
def env(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_ENDPOINT", registry.endpoint)
    for name in ("HF_TOKEN", "HUBFERRY_TOKEN", "HUBFERRY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return {**os.environ}


def test_push_of_a_dotenv_file_exits_2_and_creates_nothing(registry, alice_token, env, tmp_path):
    folder = _write(tmp_path, {".env.local": f"HF_TOKEN={HF}\n".encode(), "w.bin": b"\0" * 10})
    repo = f"alice/leak-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([sys.executable, "-m", "hubferry", "push", str(folder), "--repo", repo,
                             "--token", alice_token], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and ".env.local:1" in result.stderr and HF not in result.stderr
    assert not HfApi(endpoint=registry.endpoint, token=alice_token).repo_exists(repo)


def test_the_push_token_in_a_large_binary_stops_the_pipelined_push_before_any_commit(
    registry, alice_token, env, tmp_path,
):
    """Large files are hashed while earlier ones upload: a token found late must still commit nothing."""
    files = {f"shard-{i}.bin": os.urandom(12 * MiB) for i in range(3)}
    files["shard-2.bin"] = files["shard-2.bin"][: 6 * MiB] + alice_token.encode() + files["shard-2.bin"][6 * MiB:]
    folder = _write(tmp_path, files)
    repo = f"alice/late-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValidationError) as info:
        hubferry.publish(folder, repo, token=alice_token, settings=load_settings(retry_base_delay=0.01))
    assert "shard-2.bin (byte" in info.value.message and "the token used for this push" in info.value.message
    assert alice_token not in str(info.value)
    assert not HfApi(endpoint=registry.endpoint, token=alice_token).repo_exists(repo)  # the new repo was removed
    pub = hubferry.publish(folder, repo, token=alice_token, exclude=["shard-2.bin"], allow_secrets=False,
                           settings=load_settings(retry_base_delay=0.01))
    assert pub.verified and "shard-2.bin" not in {f.path_in_repo for f in pub.files}

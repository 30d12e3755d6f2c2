"""Attack on ``push --verbose`` output: presigned upload URLs (``sig=``) and tokens must never be printed,
including in huggingface_hub's own request lines and retry warnings."""

from __future__ import annotations

import os
import subprocess
import sys

from hubferry import testing

MiB = 1024 * 1024


def test_verbose_push_never_prints_signed_urls_or_the_token(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for i in range(3):
        (folder / f"w{i}.safetensors").write_bytes(os.urandom(MiB + i))
    # Some uploads fail once, so huggingface_hub also logs its retry warnings (they quote the URL).
    with testing.running_registry(tmp_path / "hub", fault_rate=0.5, fault_seed=2, fault_kinds="503",
                                  fault_paths="/lfs-storage/") as hub:
        token = hub.create_token("alice")
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"),
               "HUBFERRY_HOME": str(tmp_path / "home"), "HUBFERRY_RETRY_BASE_DELAY": "0.01"}
        env.pop("HF_TOKEN", None)
        result = subprocess.run(
            [sys.executable, "-m", "hubferry", "push", str(folder), "--repo", "alice/verbose", "--token", token,
             "--verbose"], env=env, capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert hub.faults_injected() > 0
    output = result.stdout + result.stderr
    assert "/lfs-storage/" in output  # the upload requests were logged ...
    assert "?<redacted>" in output  # ... with their query strings removed,
    assert "sig=" not in output and "exp=" not in output  # never printed
    assert token not in output
    assert "Request " in output or "thrown while requesting" in output  # huggingface_hub's own lines were there

"""Two pushes at once to two Hubs in one process, and hubferry.publish() as a guest in a user's script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

from huggingface_hub import HfApi

import hubferry
from hubferry import testing
from hubferry.config import load_settings

MiB = 1024 * 1024


def test_two_threads_push_to_two_registries_with_their_own_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    results: dict[str, object] = {}
    with testing.running_registry(tmp_path / "one") as one, testing.running_registry(tmp_path / "two") as two:
        hubs = {"one": one, "two": two}
        tokens = {name: hub.create_token(name) for name, hub in hubs.items()}

        def push(name: str) -> None:
            folder = tmp_path / f"model-{name}"
            folder.mkdir()
            for i in range(3):
                (folder / f"w{i}.safetensors").write_bytes(os.urandom(2 * MiB))
            settings = load_settings(retry_base_delay=0.01, read_timeout=30.0 if name == "one" else 60.0)
            try:
                results[name] = hubferry.publish(folder, f"{name}/model", endpoint=hubs[name].endpoint,
                                                 token=tokens[name], settings=settings, verbose=name == "two")
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                results[name] = exc

        threads = [threading.Thread(target=push, args=(name,)) for name in hubs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, hub in hubs.items():
            pub = results[name]
            assert getattr(pub, "verified", False), pub
            files = HfApi(endpoint=hub.endpoint, token=tokens[name]).list_repo_files(f"{name}/model")
            assert {"w0.safetensors", "w1.safetensors", "w2.safetensors"} <= set(files)
            other = "two" if name == "one" else "one"
            assert not HfApi(endpoint=hub.endpoint, token=tokens[name]).repo_exists(f"{other}/model")


GUEST = textwrap.dedent("""
    import json, logging, os, sys
    import hubferry
    import huggingface_hub.hf_api  # noqa: F401 - huggingface_hub's own logging set-up happens on its import
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    logging.basicConfig(level=logging.INFO)
    enable_progress_bars()

    def state():
        return {
            "xet_disabled": constants.HF_HUB_DISABLE_XET,
            "bars_disabled": are_progress_bars_disabled(),
            "root_level": logging.getLogger().level,
            "root_handlers": len(logging.getLogger().handlers),
            "hub_level": logging.getLogger("huggingface_hub").level,
        }

    before = state()
    publication = hubferry.publish(sys.argv[1], "alice/guest", endpoint=sys.argv[2], token=sys.argv[3])
    print(json.dumps({"before": before, "after": state(), "verified": publication.verified}))
""")


def test_publish_in_a_users_script_leaves_their_process_settings_alone(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.safetensors").write_bytes(os.urandom(MiB))
    with testing.running_registry(tmp_path / "hub") as hub:
        token = hub.create_token("alice")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_"))}
        env.update(HF_HOME=str(tmp_path / "hf"), HUBFERRY_HOME=str(tmp_path / "home"))
        result = subprocess.run([sys.executable, "-c", GUEST, str(folder), hub.endpoint, token], env=env,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["verified"] is True
    assert data["after"] == data["before"]
    assert data["before"]["xet_disabled"] is False and data["before"]["bars_disabled"] is False

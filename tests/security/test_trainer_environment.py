"""The world a training command runs in: the submitting shell's variables and folder, never hubferry's
secrets (nor the secrets of whichever process runs the job), and private files on disk."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubferry.secrets.vault import generate_key

ROOT = Path(__file__).parents[2]
#: Variables of the submitting shell (or of the worker) a training command must never see by default.
SECRETS = {
    "HF_TOKEN": None,  # the registry token, filled in by the fixture
    "HUBFERRY_VAULT_KEY": None,  # a fresh Fernet key, filled in by the fixture
    "REPLICATE_API_TOKEN": "r8_" + "R" * 37,
    "AWS_SECRET_ACCESS_KEY": "aws-secret-" + "A" * 29,
}
#: The training command: records what it sees, then writes weights to HUBFERRY_OUTPUT_DIR.
PROBE = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    Path(sys.argv[1]).write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[2:]}))
    out = Path(os.environ["HUBFERRY_OUTPUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    print("step 2/2 loss 0.5", flush=True)
    """
)


@pytest.fixture()
def shell(tmp_path, registry, alice_token):
    """The submitting shell: secrets, an ordinary STEPS=2, a project folder as its working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_", "AWS_", "REPLICATE_"))}
    secrets = {**SECRETS, "HF_TOKEN": alice_token, "HUBFERRY_VAULT_KEY": generate_key()}
    env.update(secrets, HUBFERRY_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"),
               HF_ENDPOINT=registry.endpoint, HUBFERRY_RETRY_BASE_DELAY="0.05", STEPS="2")
    project = tmp_path / "project"
    project.mkdir()
    (project / "probe.py").write_text(PROBE)
    return {"env": env, "cwd": project, "secrets": secrets, "home": tmp_path / "home"}


def hubferry(*args, shell, env=None, cwd=None, umask=None, timeout=180):
    def preexec():
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "hubferry", *args], env=env or shell["env"],
                          cwd=cwd or shell["cwd"], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def train_probe(shell, name, *extra, probe_args=(), env=None):
    seen = shell["cwd"].parent / f"{name}.seen.json"
    result = hubferry("train", "--local", "--wait", "--json", "--name", name, *extra, "--",
                      sys.executable, "probe.py", str(seen), *probe_args, shell=shell, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), json.loads(seen.read_text()), result


def assert_no_secrets(seen, secrets):
    leaked = sorted(set(secrets) & set(seen["env"]))
    assert not leaked, f"the training command saw {leaked}"
    values = json.dumps(seen["env"])
    assert not [name for name, value in secrets.items() if value in values]


def test_an_inline_training_sees_the_shell_env_and_cwd_but_no_secret(shell, registry):
    job, seen, result = train_probe(shell, "env-inline")
    assert job["state"] == "published"
    assert_no_secrets(seen, shell["secrets"])
    assert seen["env"]["STEPS"] == "2"
    assert seen["cwd"] == str(shell["cwd"])
    assert seen["env"]["HUBFERRY_OUTPUT_DIR"] == job["output_dir"]
    database = (shell["home"] / "hubferry.db").read_bytes()
    assert not [n for n, v in shell["secrets"].items() if v.encode() in database], "a secret was stored in clear"


def test_pass_env_hands_over_exactly_the_named_secret(shell):
    job, seen, _ = train_probe(shell, "env-passed", "--pass-env", "AWS_SECRET_ACCESS_KEY")
    assert job["state"] == "published"
    assert seen["env"]["AWS_SECRET_ACCESS_KEY"] == SECRETS["AWS_SECRET_ACCESS_KEY"]
    assert_no_secrets(seen, {k: v for k, v in shell["secrets"].items() if k != "AWS_SECRET_ACCESS_KEY"})
    for path in shell["home"].glob("hubferry.db*"):  # kept for the job, but encrypted
        assert SECRETS["AWS_SECRET_ACCESS_KEY"].encode() not in path.read_bytes()


def test_a_worker_runs_the_job_with_the_submitting_shell_not_its_own(shell, tmp_path, registry, alice_token,
                                                                      bob_token):
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_", "AWS_"))}
    worker_env.update(
        HUBFERRY_HOME=shell["env"]["HUBFERRY_HOME"], HF_HOME=str(tmp_path / "worker-hf"),
        HUBFERRY_VAULT_KEY=shell["env"]["HUBFERRY_VAULT_KEY"],  # the one key both read the vault with
        HUBFERRY_RECONCILE_INTERVAL_S="1", HF_TOKEN=bob_token, REPLICATE_API_TOKEN="r8_" + "W" * 37,
        AWS_SECRET_ACCESS_KEY="worker-secret-" + "W" * 26, STEPS="99", WORKER_ONLY="1",
    )
    worker_dir = tmp_path / "worker-cwd"
    worker_dir.mkdir()
    worker = subprocess.Popen([sys.executable, "-m", "hubferry", "worker"], env=worker_env, cwd=worker_dir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not list((shell["home"] / "workers").glob("*.alive")):
            assert time.monotonic() < deadline and worker.poll() is None, "worker did not start"
            time.sleep(0.1)
        job, seen, result = train_probe(shell, "env-worker")
        assert "queued for the workers" in result.stderr
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        worker.wait(timeout=30)
    assert job["state"] == "published" and job["repo_id"] == "alice/env-worker"  # the job's token, not bob's
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info("alice/env-worker").sha == job["commit_sha"]
    worker_secrets = {k: worker_env[k] for k in SECRETS}
    assert_no_secrets(seen, shell["secrets"])
    assert_no_secrets(seen, worker_secrets)
    assert seen["env"]["STEPS"] == "2" and "WORKER_ONLY" not in seen["env"]
    assert seen["cwd"] == str(shell["cwd"])


def test_a_token_on_the_command_line_is_recorded_redacted_but_given_to_the_command(shell):
    secret = "hf_" + "Q" * 36
    job, seen, result = train_probe(shell, "cli-token", probe_args=("--hub-token", secret))
    assert seen["argv"] == ["--hub-token", secret]  # the command got the real value
    assert secret not in result.stdout + result.stderr
    shown = hubferry("jobs", "show", job["id"], "--json", shell=shell)
    assert shown.returncode == 0 and secret not in shown.stdout + shown.stderr
    submitted = next(e for e in json.loads(shown.stdout)["timeline"] if e["message"].startswith("submitted"))
    assert "--hub-token 'hf_***'" in submitted["message"]
    human = hubferry("jobs", "show", job["id"], shell=shell)
    assert human.returncode == 0 and secret not in human.stdout + human.stderr
    for path in shell["home"].glob("hubferry.db*"):
        assert secret.encode() not in path.read_bytes(), f"{path.name} holds the token in clear"


def test_the_job_database_and_logs_are_private(shell):
    env = {k: v for k, v in shell["env"].items() if k != "HF_TOKEN"}
    seen = shell["cwd"].parent / "private.seen.json"
    result = hubferry("train", "--local", "--wait", "--json", "--name", "private", "--", sys.executable, "probe.py",
                      str(seen), shell=shell, env=env, umask=0)  # a careless umask: modes must not rely on it
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout.strip().splitlines()[-1])
    assert job["state"] == "trained"
    home, log = shell["home"], Path(job["log_path"])

    def mode(path: Path) -> str:
        return oct(stat.S_IMODE(path.stat().st_mode))

    assert (mode(home / "hubferry.db"), mode(home)) == ("0o600", "0o700")
    assert (mode(log), mode(log.parent)) == ("0o600", "0o700")
    assert log.read_text().strip() == "step 2/2 loss 0.5"

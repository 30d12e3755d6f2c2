"""The CLI's one error boundary and its promises, as a user sees them: exit codes (0 ok, 2 bad input or
settings, 1 failed, the trainer's own code for ``train --wait``), no tracebacks, readable output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubferry.errors import ConfigError
from hubferry.secrets.vault import Vault, generate_key
from hubferry.services.launch import default_owner
from hubferry.testing import free_port

ROOT = Path(__file__).parents[2]
FAKE = str(ROOT / "tests" / "fixtures" / "fake_trainer.py")
JOB_ID = re.compile(r"job_[a-z0-9]{12}")


def base_env(home: Path, registry, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_"))}
    env.update(HUBFERRY_HOME=str(home), HF_HOME=str(home.parent / "hf"), HF_ENDPOINT=registry.endpoint,
               HUBFERRY_RETRY_BASE_DELAY="0.05", HUBFERRY_CANCEL_GRACE_S="2")
    if token:
        env["HF_TOKEN"] = token
    return env


@pytest.fixture()
def env(tmp_path, registry, alice_token):
    return base_env(tmp_path / "home", registry, alice_token)


def hubferry(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 180):
    return subprocess.run([sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, text=True,
                          input=stdin, timeout=timeout, cwd=ROOT)


def fake(out: Path, *args: str) -> list[str]:
    return [sys.executable, FAKE, "--output", str(out), *args]


@pytest.fixture(scope="module")
def published(tmp_path_factory, registry, alice_token):
    """One job trained and published through the CLI, and the environment that ran it."""
    home = tmp_path_factory.mktemp("published") / "home"
    env = base_env(home, registry, alice_token)
    out = home.parent / "out"
    result = hubferry("train", "--local", "--wait", "--json", "--name", "boundary", "--output", str(out), "--",
                      *fake(out, "--steps", "3"), env=env)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout.strip().splitlines()[-1])
    assert job["state"] == "published"
    return env, job


# -- bad settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting,value", [("HUBFERRY_WORKER_THREADS", "0"), ("HUBFERRY_CONNECT_TIMEOUT", "abc")])
@pytest.mark.parametrize("command", ["worker", "serve", "jobs list", "push"])
def test_a_bad_setting_exits_2_naming_it(env, tmp_path, setting, value, command):
    args = command.split()
    if command == "push":
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        args += [str(tmp_path / "model"), "--repo", "alice/never-pushed"]
    if command == "serve":
        args += ["--port", str(free_port())]
    try:
        result = hubferry(*args, env={**env, setting: value}, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`hubferry {command}` started with {setting}={value} instead of refusing it")
    assert result.returncode == 2, result.stderr
    assert setting in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unusable_database_url_exits_2_naming_the_setting(env):
    result = hubferry("jobs", "list", env={**env, "HUBFERRY_DATABASE_URL": "mysql://db.example/jobs"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "HUBFERRY_DATABASE_URL" in result.stderr


@pytest.mark.parametrize("command", ["jobs show", "watch", "cancel", "retry", "logs show"])
def test_an_unknown_job_exits_2(env, command):
    result = hubferry(*command.split(), "job_doesnotexist", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "job_doesnotexist" in result.stderr and "Traceback" not in result.stderr


# -- train ----------------------------------------------------------------------------------------------


def test_train_wait_exits_with_the_trainers_own_code(env, tmp_path):
    out = tmp_path / "out"
    result = hubferry("train", "--local", "--wait", "--name", "oom", "--output", str(out), "--",
                      *fake(out, "--steps", "2", "--fail-unless", str(tmp_path / "never")), env=env)
    assert result.returncode == 3, result.stderr
    assert "CUDA out of memory" in result.stderr and "Traceback" not in result.stderr


def test_train_without_a_worker_says_it_runs_here_and_how_to_detach(env, tmp_path):
    out = tmp_path / "out"
    result = hubferry("train", "--local", "--name", "here", "--output", str(out), "--", *fake(out, "--steps", "2"),
                      env=env)
    assert result.returncode == 0, result.stderr
    assert "runs here" in result.stderr and "hubferry worker" in result.stderr
    assert "published and verified" in result.stderr


def test_train_with_a_worker_returns_at_once_and_a_cancel_reads_as_cancelled(env, tmp_path):
    env = {**env, "HUBFERRY_RECONCILE_INTERVAL_S": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "hubferry", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    job_id = None
    try:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "home" / "workers").glob("*.alive")):
            assert time.monotonic() < deadline and worker.poll() is None, "worker did not start"
            time.sleep(0.1)
        out = tmp_path / "out"
        started = time.monotonic()
        result = hubferry("train", "--local", "--json", "--name", "detached", "--output", str(out), "--",
                          *fake(out, "--steps", "600", "--step-s", "0.1"), env=env)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        job_id = json.loads(result.stdout)["id"]
        assert JOB_ID.fullmatch(job_id)
        assert elapsed < 10, f"train took {elapsed:.1f} s to hand the job to the worker"
        assert job_id in result.stderr and "queued for the workers" in result.stderr
        assert "runs here" not in result.stderr

        deadline = time.monotonic() + 60
        while json.loads(hubferry("jobs", "show", job_id, "--json", env=env).stdout)["state"] != "training":
            assert time.monotonic() < deadline, "the worker never started the training"
            time.sleep(0.2)
        cancelled = hubferry("cancel", job_id, env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        deadline = time.monotonic() + 30
        while "trainer stopped" not in hubferry("jobs", "show", job_id, "--json", env=env).stdout:
            assert time.monotonic() < deadline, "the worker never saw its trainer stop"
            time.sleep(0.2)
    finally:
        if job_id is not None:  # never leave a 60 s trainer behind a failed assertion
            hubferry("cancel", job_id, env=env)
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    shown = hubferry("jobs", "show", job_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "cancelled" in shown.stderr
    assert "-15" not in shown.stderr and "exited" not in shown.stderr and "signal 15" not in shown.stderr


# -- reading jobs ---------------------------------------------------------------------------------------


def test_jobs_list_piped_prints_full_ids_tab_separated(published):
    env, job = published
    result = hubferry("jobs", "list", env=env)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == [job["id"]]
    assert rows[0][1:3] == ["boundary", "published"]


def test_jobs_show_is_a_readable_table_without_python_reprs(published):
    env, job = published
    result = hubferry("jobs", "show", job["id"], env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    assert "{'" not in text and "['" not in text and "': " not in text
    assert job["id"] in text and job["commit_sha"] in text
    for stage in ("training", "publishing", "verifying"):
        assert stage in text


def test_logs_show_prints_the_trainer_log(published):
    env, job = published
    result = hubferry("logs", "show", job["id"], env=env)
    assert result.returncode == 0, result.stderr
    assert "step 3/3" in result.stdout and "Loading checkpoint shards" in result.stdout
    followed = hubferry("logs", "show", job["id"], "--follow", env=env, timeout=30)  # an ended job: returns
    assert followed.returncode == 0 and "step 3/3" in followed.stdout


# -- secrets --------------------------------------------------------------------------------------------


def test_secrets_rotate_re_encrypts_with_the_new_key(env, tmp_path):
    old, new = generate_key(), generate_key()
    stored = hubferry("secrets", "set", "wandb_key", "--value-stdin", env={**env, "HUBFERRY_VAULT_KEY": old},
                      stdin="value-to-keep\n")
    assert stored.returncode == 0, stored.stderr
    home = Path(env["HUBFERRY_HOME"])
    with pytest.raises(ConfigError):  # the new key alone cannot read it yet
        Vault(home, new).get(default_owner(), "wandb_key")
    rotated = hubferry("secrets", "rotate", env={**env, "HUBFERRY_VAULT_KEY": new, "HUBFERRY_VAULT_OLD_KEYS": old})
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted 1 secret" in rotated.stderr
    listed = hubferry("secrets", "list", "--json", env={**env, "HUBFERRY_VAULT_KEY": new})
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)["secrets"]] == ["wandb_key"]
    assert Vault(home, new).get(default_owner(), "wandb_key") == "value-to-keep"

"""The CLI against a running ``hubferry serve`` (HUBFERRY_URL + HUBFERRY_API_TOKEN), as a user runs it.

The CLI runs with an empty HUBFERRY_HOME of its own, so anything it did to a local database instead of the
service would show there; its output is compared with the local CLI's output for the same jobs, read from
the service's own database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubferry.testing import free_port

ROOT = Path(__file__).parents[2]
FAKE = str(ROOT / "tests" / "fixtures" / "fake_trainer.py")


@dataclass
class Service:
    url: str
    home: Path
    #: The environment of a shell on the service's machine (its own database, no HUBFERRY_URL).
    local_env: dict[str, str]
    tokens: dict[str, str]
    #: Every output of every CLI run, to check that no token ever appears.
    outputs: list[str] = field(default_factory=list)


def run(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 180,
        service: Service | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, text=True,
                            input=stdin, timeout=timeout, cwd=ROOT)
    if service is not None:
        service.outputs += [result.stdout, result.stderr]
    return result


def one_json_line(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def _base_env(home: Path, registry_endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_", "REPLICATE_"))}
    env.update(HUBFERRY_HOME=str(home), HF_HOME=str(home / "hf"), HF_ENDPOINT=registry_endpoint,
               HUBFERRY_RETRY_BASE_DELAY="0.05", COLUMNS="200")
    return env


@contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """``hubferry serve`` on a free port with ``env``; yields its URL once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "hubferry", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=1) as response:
                    if json.loads(response.read()) == {"status": "ok"}:
                        break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)


def create_user(name: str, env: dict[str, str], *, admin: bool = False) -> str:
    """A user of the service's database; returns their API token."""
    created = run("users", "create", name, *(["--admin"] if admin else []), "--token", "--json", env=env)
    assert created.returncode == 0, created.stderr
    return str(one_json_line(created.stdout)["token"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, registry) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("service") / "home"
    env = _base_env(home, registry.endpoint)
    tokens = {"alice": create_user("alice", env, admin=True), "bob": create_user("bob", env)}
    with serving(env) as url:
        yield Service(url, home, env, tokens)


@pytest.fixture()
def client_home(tmp_path: Path) -> Path:
    return tmp_path / "client-home"


def remote_env(service: Service, client_home: Path, user: str = "alice", **extra: str) -> dict[str, str]:
    """A shell elsewhere: its own empty HUBFERRY_HOME, the service's URL and the user's API token."""
    env = _base_env(client_home, service.local_env["HF_ENDPOINT"])
    env.update({"HUBFERRY_URL": service.url, "HUBFERRY_API_TOKEN": service.tokens[user], **extra})
    return env


def assert_no_local_state(client_home: Path) -> None:
    """Nothing acted on a local database: no job store, vault or log under the CLI's own home."""
    made = sorted(p.name for p in client_home.rglob("*")) if client_home.exists() else []
    assert not [name for name in made if name.endswith((".db", ".log", ".json", ".key"))], made


def test_train_watch_list_show_logs_cancel_through_the_service(service, client_home, tmp_path, registry,
                                                               alice_token):
    env = remote_env(service, client_home)
    stored = run("secrets", "set", "hf_token", "--value-stdin", env=env, stdin=alice_token + "\n", service=service)
    assert stored.returncode == 0, stored.stderr
    assert f"Stored hf_token for alice at {registry.endpoint}" in stored.stderr
    listed = run("secrets", "list", "--json", env=env, service=service)
    assert listed.returncode == 0, listed.stderr
    secrets = one_json_line(listed.stdout)
    assert secrets["owner"] == "alice"
    assert [(s["name"], s["endpoint"], s["username"]) for s in secrets["secrets"]] == [
        ("hf_token", registry.endpoint, "alice")]

    # train a local job on the service, then follow it live with watch
    out = tmp_path / "out"
    created = run("train", "--local", "--name", "remote-lora", "--total-steps", "40", "--json", "--output",
                  str(out), "--", sys.executable, FAKE, "--output", str(out), "--steps", "40", "--step-s", "0.05",
                  env=env, service=service)
    assert created.returncode == 0, created.stderr
    assert f"running on the service at {service.url}" in created.stderr
    job_id = one_json_line(created.stdout)["id"]
    watched = run("watch", job_id, env=env, service=service)
    assert watched.returncode == 0, watched.stderr
    assert f"published and verified: {registry.endpoint}/alice/remote-lora" in watched.stderr

    # the same commands, in remote and in local mode on the service's own database, print the same
    local = service.local_env
    for args in (["jobs", "list"], ["jobs", "list", "--state", "published", "--json"],
                 ["jobs", "list", "--trainer", "local", "--limit", "1"], ["jobs", "list", "--trainer", "replicate"],
                 ["jobs", "show", job_id],
                 ["jobs", "show", job_id, "--json"], ["logs", "show", job_id, "-n", "5"], ["logs", "show", job_id],
                 ["watch", job_id]):
        remote_run, local_run = run(*args, env=env, service=service), run(*args, env=local)
        assert remote_run.returncode == local_run.returncode == 0, remote_run.stderr + local_run.stderr
        assert (remote_run.stdout, remote_run.stderr) == (local_run.stdout, local_run.stderr), args
    assert run("jobs", "list", "--trainer", "replicate", env=env).stdout == ""
    rows = [line.split("\t") for line in run("jobs", "list", "--trainer", "local", env=env).stdout.splitlines()]
    assert rows[0][:5] == [job_id, "remote-lora", "published", "100%", f"{registry.endpoint}/alice/remote-lora"]
    shown = one_json_line(run("jobs", "show", job_id, "--json", env=env).stdout)
    assert shown["state"] == "published" and shown["token_source"] == "stored" and len(shown["commit_sha"]) == 40
    human = run("jobs", "show", job_id, env=env).stderr
    for label in ("id", "name", "state", "trainer", "repo", "endpoint", "token", "commit", "progress", "output",
                  "log", "attempts"):
        assert f"{label:>11}: " in human
    assert "stage_finished" in human
    log = run("logs", "show", job_id, env=env, service=service)
    assert "Loading checkpoint shards" in log.stdout and "40/40" in log.stdout

    # a long job: logs --follow prints it live and ends when the job is cancelled
    slow = tmp_path / "slow"
    created = run("train", "--local", "--name", "slow-lora", "--json", "--output", str(slow), "--", sys.executable,
                  FAKE, "--output", str(slow), "--steps", "3000", "--step-s", "0.05", env=env, service=service)
    slow_id = one_json_line(created.stdout)["id"]
    deadline = time.monotonic() + 60
    while one_json_line(run("jobs", "show", slow_id, "--json", env=env).stdout)["state"] != "training":
        assert time.monotonic() < deadline, "the slow job did not start training"
        time.sleep(0.3)
    follow = subprocess.Popen([sys.executable, "-m", "hubferry", "logs", "show", slow_id, "--follow"], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        cancelled = run("cancel", slow_id, env=env, service=service)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"job {slow_id} cancelled" in cancelled.stderr
        followed, follow_err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    service.outputs += [followed, follow_err]
    assert follow.returncode == 0, follow_err
    assert "Loading checkpoint shards" in followed and "/3000" in followed
    redraws = [line for line in followed.splitlines() if "/3000 [" in line]
    assert len(redraws) >= 2 and all(line.count("/3000 [") == 1 for line in redraws)  # a line per redraw
    state = one_json_line(run("jobs", "show", slow_id, "--json", env=env).stdout)["state"]
    assert state == "cancelled"
    again = run("cancel", slow_id, env=env, service=service)
    assert again.returncode == 2 and "is cancelled" in again.stderr

    # another user sees none of it
    bob = remote_env(service, client_home, "bob")
    for args in (["jobs", "show", job_id], ["cancel", slow_id], ["logs", "show", job_id], ["watch", job_id]):
        refused = run(*args, env=bob, service=service)
        assert refused.returncode == 2 and f"job {args[-1]} not found" in refused.stderr, (args, refused.stderr)
    assert one_json_line(run("jobs", "list", "--json", env=bob, service=service).stdout) == {"jobs": []}
    assert "No secrets for bob." in run("secrets", "list", env=bob, service=service).stderr

    # secrets: your own only, the names the service keeps, deleted once
    other = run("secrets", "list", "--owner", "bob", env=env, service=service)
    assert other.returncode == 2 and "your own secrets only" in other.stderr
    unknown = run("secrets", "set", "wandb_key", "--value-stdin", env=env, stdin="x\n", service=service)
    assert unknown.returncode == 2 and "stores no secret named 'wandb_key'" in unknown.stderr
    deleted = run("secrets", "delete", "hf_token", env=env, service=service)
    assert deleted.returncode == 0 and "Deleted hf_token for alice." in deleted.stderr
    again = run("secrets", "delete", "hf_token", env=env, service=service)
    assert again.returncode == 1 and "No secret hf_token for alice." in again.stderr

    assert_no_local_state(client_home)
    everything = "\n".join(service.outputs)
    for secret in (*service.tokens.values(), alice_token):
        assert secret not in everything


def test_a_failed_training_keeps_its_exit_code_and_is_retried_on_the_service(service, client_home, tmp_path):
    env = remote_env(service, client_home)
    out = tmp_path / "broken"
    result = run("train", "--local", "--name", "broken", "--wait", "--json", "--skip-preflight", "--output",
                 str(out), "--", sys.executable, FAKE, "--output", str(out), "--steps", "3", "--exit-code", "7",
                 env=env)
    assert result.returncode == 7, result.stderr  # the trainer's own exit code, as locally
    job = one_json_line(result.stdout)
    assert job["state"] == "failed" and "exit code 7" in job["error"]["message"]
    assert "failed (training_error)" in result.stderr
    retried = run("retry", job["id"], "--wait", env=env)
    assert retried.returncode == 1, retried.stderr  # still broken: trains again, fails again, says so
    assert re.search(rf"job {job['id']}: \w+ \(running on the service at {re.escape(service.url)}\)", retried.stderr)
    assert "failed (training_error)" in retried.stderr
    assert_no_local_state(client_home)


def test_wrong_token_service_down_and_half_configured(service, client_home):
    wrong = remote_env(service, client_home, HUBFERRY_API_TOKEN="hfy_" + "x" * 40)
    refused = run("jobs", "list", env=wrong)
    assert refused.returncode == 1
    assert f"the hubferry service at {service.url} did not accept HUBFERRY_API_TOKEN" in refused.stderr
    assert "hubferry users token NAME" in refused.stderr and "x" * 40 not in refused.stderr + refused.stdout

    down_url = f"http://127.0.0.1:{free_port()}"
    down = run("jobs", "show", "job_x", env=remote_env(service, client_home, HUBFERRY_URL=down_url))
    assert down.returncode == 1
    assert f"cannot reach the hubferry service at {down_url}" in down.stderr
    assert "check HUBFERRY_URL, and that `hubferry serve` runs there" in down.stderr

    only_url = remote_env(service, client_home)
    del only_url["HUBFERRY_API_TOKEN"]
    half = run("jobs", "list", env=only_url)
    assert half.returncode == 2 and "HUBFERRY_URL is set but HUBFERRY_API_TOKEN is not" in half.stderr
    only_token = remote_env(service, client_home)
    del only_token["HUBFERRY_URL"]
    half = run("train", "--local", "--", "true", env=only_token)
    assert half.returncode == 2 and "HUBFERRY_API_TOKEN is set but HUBFERRY_URL is not" in half.stderr
    assert service.tokens["alice"] not in half.stderr + half.stdout

    assert_no_local_state(client_home)
    users = run("users", "list", env=remote_env(service, client_home))  # acts here, and says so
    assert users.returncode == 0 and f"not on the service at HUBFERRY_URL ({service.url})" in users.stderr
    local_only = run("adopt", "replicate", "r8_training", env=remote_env(service, client_home))
    assert local_only.returncode == 2 and "works on this machine's database only" in local_only.stderr


def test_a_replicate_job_file_with_a_local_photo_folder_runs_on_the_service(tmp_path, registry, alice_token,
                                                                             fake_replicate):
    from hubferry.dataset.testing import photos

    fake = fake_replicate
    fake.knobs.steps_per_second, fake.knobs.boot_s, fake.knobs.setup_s = 50.0, 0.2, 0.2
    env = _base_env(tmp_path / "service", registry.endpoint)
    env.update(HUBFERRY_REPLICATE_BASE_URL=fake.base_url, HUBFERRY_POLL_INTERVAL_S="0.2", HF_HUB_DISABLE_XET="1",
               HUBFERRY_RECONCILE_INTERVAL_S="1")
    token = create_user("carol", env)  # not an administrator: a Replicate job needs no server rights
    images = tmp_path / "photos"
    photos(images, 4, size=(512, 512))
    job_file = tmp_path / "job.toml"
    job_file.write_text(f'trainer = "replicate"\nimages = "{images}"\ntrigger_word = "hbfyperson"\nsteps = 20\n'
                        'repo = "alice/flux-remote"\n')
    client_home = tmp_path / "client-home"
    with serving(env) as url:
        client = _base_env(client_home, registry.endpoint)
        client.update(HUBFERRY_URL=url, HUBFERRY_API_TOKEN=token, HF_TOKEN=alice_token,
                      REPLICATE_API_TOKEN=fake.token)
        result = run("train", "-f", str(job_file), "--wait", "--json", env=client, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"uploading the dataset to the service: {images}" in result.stderr
    job = one_json_line(result.stdout)
    assert job["state"] == "published" and job["owner"] == "carol" and job["trainer"] == "replicate"
    assert job["repo_url"] == f"{registry.endpoint}/alice/flux-remote"
    assert len(job["dataset_report"]["images"]) == 4
    training = fake.trainings()[0]
    assert training["input"]["steps"] == 20 and training["input"]["trigger_word"] == "hbfyperson"
    assert_no_local_state(client_home)
    for secret in (token, alice_token, fake.token):
        assert secret not in result.stdout + result.stderr

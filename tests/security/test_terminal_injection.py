"""What a trainer prints (or a user names a job) never drives the user's terminal: no escape sequences
(clipboard writes, title changes, hyperlinks, clear screen) and no rich markup reach it, and nothing
crashes on them, in any command that shows a job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hubferry.config import load_settings
from hubferry.services.context import open_context
from hubferry.services.training import MAX_ERROR_CHARS

ROOT = Path(__file__).parents[2]
#: A hostile trainer: long lines (to test the error cap), then every kind of sequence, then exit 4.
EVIL = textwrap.dedent(
    r"""
    import os, sys
    from pathlib import Path
    ESC, BEL = "\x1b", "\x07"
    for i in range(30):
        print(f"noise {i} " + "n" * 3000, flush=True)
    print(f"{ESC}]52;c;cm0gLXJmIH4={BEL}clipboard written", flush=True)
    print(f"{ESC}]0;pwned title{BEL}title changed", flush=True)
    print(f"{ESC}]8;;http://evil.example/{ESC}\\click me{ESC}]8;;{ESC}\\ hyperlink", flush=True)
    print(f"{ESC}[2J{ESC}[Hscreen cleared", flush=True)
    print("\x9b2J eight-bit csi \x9d0;title\x9c", flush=True)
    print(f"{ESC}P+q544e{ESC}\\ dcs query", flush=True)
    print("[link=http://evil.example/]markup link[/link]", flush=True)
    print("[bold red]markup style", flush=True)
    sys.stderr.write("\r[/nonexistent] closing tag\n")
    sys.exit(int(os.environ.get("EVIL_EXIT", "4")))
    """
)
NAME = "[/nonexistent]"
#: What a hostile trainer or name could make a terminal do. Rich's own cursor control (Live) and
#: styles (SGR) are CSI sequences we allow in terminal mode; nothing else may appear.
_RICH_OWN = re.compile(r"\x1b\[(?:\?25[lh]|[0-9;]*m|2K|[0-9]*[AGK])|\r")


def assert_inert(text: str, *, terminal: bool = False) -> None:
    assert "Traceback" not in text
    assert "\x07" not in text and "\x9b" not in text and "\x9d" not in text
    assert "\x1b]" not in text, "an OSC sequence (title, clipboard, hyperlink) reached the terminal"
    assert "\x1b[2J" not in text and "\x1b[H" not in text and "\x1bP" not in text
    rest = _RICH_OWN.sub("", text) if terminal else text
    assert "\x1b" not in rest


@pytest.fixture()
def env(tmp_path, registry, alice_token):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_"))}
    env.pop("TTY_COMPATIBLE", None)
    env.pop("FORCE_COLOR", None)
    env.update(HUBFERRY_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=registry.endpoint,
               HF_TOKEN=alice_token, HUBFERRY_RETRY_BASE_DELAY="0.05")
    (tmp_path / "evil.py").write_text(EVIL)
    return env


def hubferry(*args: str, env: dict[str, str], terminal: bool = False, timeout: float = 180):
    env = {**env, "TTY_COMPATIBLE": "1", "COLUMNS": "120"} if terminal else env
    return subprocess.run([sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, timeout=timeout,
                          cwd=ROOT, text=True, encoding="utf-8", errors="surrogateescape")


def evil_job(env, tmp_path, *, terminal: bool):
    result = hubferry("train", "--local", "--wait", "--name", NAME, "--", sys.executable, str(tmp_path / "evil.py"),
                      env=env, terminal=terminal)
    return result


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_a_hostile_trainer_cannot_reach_the_terminal(env, tmp_path, monkeypatch, terminal):
    trained = evil_job(env, tmp_path, terminal=terminal)
    assert trained.returncode == 4, trained.stderr  # the trainer's own exit code, not a crash
    assert_inert(trained.stdout + trained.stderr, terminal=terminal)
    assert "[/nonexistent] closing tag" in trained.stderr  # shown literally in the failure summary
    assert "screen cleared" in trained.stderr and "markup link" in trained.stderr

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = open_context(load_settings())
    (job,) = ctx.jobs.list_jobs()
    assert job.name == NAME and job.state.value == "failed"

    shown = hubferry("jobs", "show", job.id, env=env, terminal=terminal)
    assert shown.returncode == 0, shown.stderr
    assert_inert(shown.stdout + shown.stderr, terminal=terminal)
    assert "[/nonexistent] closing tag" in shown.stderr

    as_json = hubferry("jobs", "show", job.id, "--json", env=env, terminal=terminal)
    assert as_json.returncode == 0, as_json.stderr
    assert "\\u001b" not in as_json.stdout and "\\u0007" not in as_json.stdout
    assert_inert(as_json.stdout + as_json.stderr)
    assert json.loads(as_json.stdout)["error"]["category"] == "training_error"

    watched = hubferry("watch", job.id, env=env, terminal=terminal)
    assert watched.returncode == 1, watched.stderr  # a failed job: exit 1, no crash
    assert_inert(watched.stdout + watched.stderr, terminal=terminal)
    assert "[/nonexistent] closing tag" in watched.stderr

    logs = hubferry("logs", "show", job.id, "--lines", "10", env=env, terminal=terminal)
    assert logs.returncode == 0, logs.stderr
    assert_inert(logs.stdout + logs.stderr)
    assert "title changed" in logs.stdout and "[link=http://evil.example/]markup link[/link]" in logs.stdout

    listed = hubferry("jobs", "list", env=env, terminal=terminal)
    assert listed.returncode == 0, listed.stderr
    assert_inert(listed.stdout + listed.stderr, terminal=terminal)
    assert NAME in listed.stdout


def test_the_stored_error_is_clean_and_capped(env, tmp_path, monkeypatch):
    trained = evil_job(env, tmp_path, terminal=False)
    assert trained.returncode == 4, trained.stderr
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = open_context(load_settings())
    (job,) = ctx.jobs.list_jobs()
    message = job.error.message
    assert len(message) <= MAX_ERROR_CHARS <= 4000  # 30 lines of 3000 characters came before it
    assert "[/nonexistent] closing tag" in message and "clipboard written" in message
    assert "exited with code 4" in message  # the cap keeps the reason and cuts the log
    for text in [message, job.error.hint, *(e.message for e in ctx.jobs.events(job.id))]:
        assert_inert(text)
    assert all(len(e.message) <= 1000 for e in ctx.jobs.events(job.id))


def test_a_job_named_like_markup_does_not_break_train_or_the_list(env, tmp_path):
    env = {k: v for k, v in env.items() if k != "HF_TOKEN"}
    out = tmp_path / "out"
    trainer = [sys.executable, str(ROOT / "tests" / "fixtures" / "fake_trainer.py"), "--output", str(out),
               "--steps", "2"]
    for name in (NAME, "[link=http://evil.example/]x", "\x1b]0;title\x07named"):
        trained = hubferry("train", "--local", "--name", name, "--output", str(out), "--", *trainer, env=env)
        assert trained.returncode == 0, trained.stderr
        assert_inert(trained.stdout + trained.stderr)
    for terminal in (False, True):
        listed = hubferry("jobs", "list", env=env, terminal=terminal)
        assert listed.returncode == 0, listed.stderr
        assert_inert(listed.stdout + listed.stderr, terminal=terminal)
        assert NAME in listed.stdout and "[link=http://evil.example/]x" in listed.stdout

"""Following a growing log, and the local subprocess trainer behind the Trainer protocol."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import pytest

from hubferry.config import Settings
from hubferry.domain.jobs import new_job
from hubferry.errors import ValidationError
from hubferry.tracking.logfile import read_lines, tail
from hubferry.trainers import RunStatus, for_kind
from hubferry.trainers.local import LocalTrainer, group_alive


def test_read_lines_splits_on_carriage_returns_and_keeps_partial_lines(tmp_path):
    log = tmp_path / "x.log"
    assert read_lines(log) == ([], "0")
    log.write_bytes(b"step 1/10\r step 2/10\rstep 3")
    lines, cursor = read_lines(log)
    assert lines == ["step 1/10", " step 2/10"]
    with log.open("ab") as fh:
        fh.write(b"/10\nloss 0.5\r\n")
    lines, cursor = read_lines(log, cursor)
    assert lines == ["step 3/10", "loss 0.5"]
    with log.open("ab") as fh:
        fh.write(b"tail without newline")
    assert read_lines(log, cursor) == ([], cursor)
    assert read_lines(log, cursor, final=True)[0] == ["tail without newline"]


def test_log_tail_collapses_tqdm_redraws_and_redacts(tmp_path):
    from hubferry.logs import register_secret

    secret = "hf_" + "S" * 34
    register_secret(secret)
    log = tmp_path / "x.log"
    log.write_text(f"a\n 10%|#\r 50%|##\r100%|###\ntoken={secret}\n")
    assert tail(log).splitlines() == ["a", "100%|###", "token=hf_***"]


def _job(tmp_path, command, env=None):
    return new_job(owner="alice", name="t", trainer="local", repo_id="alice/t", dataset="out", private=True,
                   now=datetime.now(UTC), params={"command": command, "output_dir": str(tmp_path / "out"),
                                                  "cwd": str(tmp_path), "env": env or {"PATH": "/usr/bin:/bin"}})


def _wait(trainer, handle):
    cursor, lines = "", []
    while (seen := trainer.poll(handle, cursor)).status is RunStatus.RUNNING:
        lines += seen.lines
        cursor = seen.cursor
        time.sleep(0.02)
    return seen, lines + seen.lines


@pytest.fixture()
def trainer(tmp_path):
    return for_kind("local", Settings(home=tmp_path / "home"))


def test_local_trainer_reports_exit_codes_logs_and_outputs(tmp_path, trainer):
    assert trainer.capabilities.can_retry_training and not trainer.capabilities.pushes_events
    handle = trainer.start(_job(tmp_path, [sys.executable, "-c", "print('hello')"]), tmp_path / "ok.log")
    seen, lines = _wait(trainer, handle)
    assert seen.status is RunStatus.SUCCEEDED and lines == ["hello"]
    assert trainer.fetch_outputs(handle, tmp_path / "x") == tmp_path / "out"
    handle = trainer.start(_job(tmp_path, [sys.executable, "-c", "import sys; sys.exit(4)"]), tmp_path / "bad.log")
    seen, _ = _wait(trainer, handle)
    assert seen.status is RunStatus.FAILED and seen.exit_code == 4


def test_the_command_runs_with_the_recorded_environment_and_folder(tmp_path, trainer):
    code = "import os; print(os.getcwd(), os.environ.get('STEPS'), os.environ.get('HF_TOKEN'))"
    job = _job(tmp_path, [sys.executable, "-c", code], env={"STEPS": "2"})
    seen, lines = _wait(trainer, trainer.start(job, tmp_path / "env.log"))
    assert lines == [f"{tmp_path} 2 None"]
    seen, lines = _wait(trainer, trainer.start(job, tmp_path / "env2.log", {"HF_TOKEN": "given"}))
    assert lines == [f"{tmp_path} 2 given"]


def test_a_run_started_by_a_vanished_process_is_lost(tmp_path, trainer):
    handle = trainer.start(_job(tmp_path, [sys.executable, "-c", "pass"]), tmp_path / "x.log")
    _wait(trainer, handle)
    other = LocalTrainer(trainer.settings)
    LocalTrainer._processes.pop(handle["pid"])  # as seen from a process that did not start it
    assert other.poll(handle).status is RunStatus.LOST


def test_cancel_escalates_to_sigkill_for_a_process_ignoring_sigterm(tmp_path, trainer):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(60)"
    handle = trainer.start(_job(tmp_path, [sys.executable, "-c", code]), tmp_path / "t.log")
    while "ready" not in (tmp_path / "t.log").read_text():
        time.sleep(0.02)
    started = time.monotonic()
    trainer.cancel(handle, grace_s=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert trainer.poll(handle).status is RunStatus.CANCELLED and not group_alive(handle["pid"])


def test_missing_command_is_a_validation_error(tmp_path, trainer):
    with pytest.raises(ValidationError, match="cannot start"):
        trainer.start(_job(tmp_path, ["/nonexistent/trainer"]), tmp_path / "x.log")
    with pytest.raises(ValidationError, match="no training command"):
        trainer.start(_job(tmp_path, []), tmp_path / "x.log")
    with pytest.raises(ValidationError, match="unknown trainer"):
        for_kind("nope", trainer.settings)

"""Following a growing log, and the local subprocess trainer."""

from __future__ import annotations

import sys
import time

from hubferry.services.training import LogFollower, log_tail
from hubferry.trainers.base import RunStatus
from hubferry.trainers.local import LocalTrainer, group_alive


def test_follower_splits_on_carriage_returns_and_keeps_partial_lines(tmp_path):
    log = tmp_path / "x.log"
    follower = LogFollower(log)
    assert follower.read_new() == []
    log.write_bytes(b"step 1/10\r step 2/10\rstep 3")
    assert follower.read_new() == ["step 1/10", " step 2/10"]
    with log.open("ab") as fh:
        fh.write(b"/10\nloss 0.5\r\n")
    assert follower.read_new() == ["step 3/10", "loss 0.5"]
    with log.open("ab") as fh:
        fh.write(b"tail without newline")
    assert follower.flush() == ["tail without newline"]


def test_log_tail_collapses_tqdm_redraws_and_redacts(tmp_path):
    from hubferry.logs import register_secret

    secret = "hf_" + "S" * 34
    register_secret(secret)
    log = tmp_path / "x.log"
    log.write_text(f"a\n 10%|#\r 50%|##\r100%|###\ntoken={secret}\n")
    tail = log_tail(log)
    assert tail.splitlines() == ["a", "100%|###", "token=hf_***"]


def test_local_trainer_reports_exit_codes_and_logs(tmp_path):
    ok = LocalTrainer([sys.executable, "-c", "print('hello')"])
    ok.start(tmp_path / "ok.log")
    while (state := ok.poll()).status is RunStatus.RUNNING:
        time.sleep(0.02)
    assert state.status is RunStatus.SUCCEEDED and (tmp_path / "ok.log").read_text() == "hello\n"
    bad = LocalTrainer([sys.executable, "-c", "import sys; sys.exit(4)"])
    bad.start(tmp_path / "bad.log")
    while (state := bad.poll()).status is RunStatus.RUNNING:
        time.sleep(0.02)
    assert state.status is RunStatus.FAILED and state.exit_code == 4


def test_cancel_escalates_to_sigkill_for_a_process_ignoring_sigterm(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(60)"
    trainer = LocalTrainer([sys.executable, "-c", code])
    pid = trainer.start(tmp_path / "t.log")
    while "ready" not in (tmp_path / "t.log").read_text():
        time.sleep(0.02)
    started = time.monotonic()
    trainer.cancel(grace_s=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert trainer.poll().status is RunStatus.CANCELLED and not group_alive(pid)


def test_missing_command_is_a_validation_error(tmp_path):
    import pytest

    from hubferry.errors import ValidationError

    with pytest.raises(ValidationError, match="cannot start"):
        LocalTrainer(["/nonexistent/trainer"]).start(tmp_path / "x.log")
    with pytest.raises(ValidationError, match="no training command"):
        LocalTrainer([])

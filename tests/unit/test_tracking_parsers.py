"""Reading progress facts out of single trainer log lines."""

from __future__ import annotations

import pytest

from hubferry.tracking.parsers import Reading, classify_label, extract_loss, is_bare, parse_line

AI_TOOLKIT_BAR = (
    "flux_train_replicate:  31%|███       | 310/1000 [02:10<04:51,  2.37it/s, lr: 4.0e-04 loss: 3.215e-01]"
)


def only(line: str) -> Reading:
    readings = parse_line(line)
    assert len(readings) == 1, readings
    return readings[0]


def test_ai_toolkit_bar_gives_label_counts_rate_and_loss():
    bar = only(AI_TOOLKIT_BAR)
    assert bar.kind == "bar"
    assert bar.label == "flux_train_replicate"
    assert (bar.n, bar.total, bar.percent) == (310, 1000, 31.0)
    assert bar.rate_per_s == pytest.approx(2.37)
    assert bar.loss == pytest.approx(0.3215)


def test_n_over_total_is_preferred_to_the_rounded_printed_percent():
    bar = only("steps:  45%|████▌     | 455/1000 [05:00<06:06,  1.50it/s, avr_loss=0.123]")
    assert bar.percent == pytest.approx(45.5)
    assert bar.loss == pytest.approx(0.123)


def test_seconds_per_iteration_is_inverted_to_a_rate():
    bar = only("flux_train_replicate:   0%|          | 1/1000 [00:02<39:41,  2.50s/it, loss: 4.362e-01]")
    assert bar.rate_per_s == pytest.approx(0.4)


def test_unknown_rate_and_unscaled_units():
    assert only("  0%|          | 0/375 [00:00<?, ?it/s]").rate_per_s is None
    bar = only("Training:  50%|█████     | 2.50k/5.00k [10:00<10:00,  4.17kit/s]")
    assert (bar.n, bar.total, bar.rate_per_s) == (2500, 5000, 4170)


def test_bar_without_a_total_gives_a_count_but_no_percent():
    bar = only("Training: 310it [02:10,  2.37it/s, loss=0.321]")
    assert (bar.label, bar.n, bar.total, bar.percent) == ("Training", 310, None, None)
    assert bar.loss == pytest.approx(0.321)
    assert only("310it [02:10, ?it/s]").n == 310


def test_every_carriage_return_update_in_one_line_is_read():
    line = (
        "\rflux_train_replicate:  10%|█         | 100/1000 [00:40<06:00,  2.50it/s]"
        "\rflux_train_replicate:  20%|██        | 200/1000 [01:20<05:20,  2.50it/s]"
        "\rflux_train_replicate:  30%|███       | 300/1000 [02:00<04:40,  2.50it/s]\n"
    )
    assert [r.n for r in parse_line(line)] == [100, 200, 300]


def test_ansi_cursor_codes_from_nested_bars_are_ignored():
    bar = only("\x1b[A\x1b[2Ksteps:  45%|████▌     | 450/1000 [05:00<06:06,  1.50it/s]")
    assert (bar.label, bar.n) == ("steps", 450)


def test_cut_off_bar_that_contradicts_its_printed_percent_is_dropped():
    assert parse_line("flux_train_replicate:  31%|███       | 310/10") == []
    assert parse_line("flux_train_replicate:  31%|███       | 31") == []


def test_download_bars_count_bytes():
    bar = only("model.safetensors:  45%|████▌     | 1.08G/2.40G [00:10<00:12, 108MB/s]")
    assert bar.counts_bytes


@pytest.mark.parametrize(
    ("line", "n", "total", "percent"),
    [
        ("step 150/1000", 150, 1000, 15.0),
        ("Step 150 of 1000 | loss 0.2", 150, 1000, 15.0),
        ("[Step: 150/1000] loss=0.3", 150, 1000, 15.0),
        ("Steps: 45%", None, None, 45.0),
    ],
)
def test_step_lines(line, n, total, percent):
    reading = only(line)
    assert reading.kind == "steps"
    assert (reading.n, reading.total, reading.percent) == (n, total, percent)


def test_epoch_lines_and_timesteps_are_not_steps():
    reading = only("Epoch 2/10")
    assert (reading.kind, reading.n, reading.total) == ("epochs", 2, 10)
    assert parse_line("sampling timesteps 500/1000") == []


def test_transformers_trainer_dicts():
    reading = only("{'loss': 0.41, 'grad_norm': 1.23, 'learning_rate': 2e-05, 'epoch': 1.5}")
    assert (reading.kind, reading.loss, reading.epoch) == ("trainer", 0.41, 1.5)
    final = only("{'train_runtime': 75.2, 'train_steps_per_second': 4.9, 'train_loss': 0.52, 'epoch': 3.0}")
    assert final.loss == pytest.approx(0.52)
    evaluation = only("{'eval_loss': 0.3, 'eval_runtime': 1.2, 'epoch': 1.0}")
    assert evaluation.loss is None and evaluation.epoch == 1.0


def test_trainer_dict_after_a_bar_on_the_same_line_gives_both():
    line = " 27%|██▋       | 100/375 [00:20<00:55,  5.00it/s]{'loss': 2.1, 'learning_rate': 4.5e-05, 'epoch': 0.8}"
    kinds = [r.kind for r in parse_line(line)]
    assert kinds == ["bar", "trainer"]


def test_json_that_is_not_a_trainer_dict_is_ignored():
    assert parse_line('{"type": "sd_trainer", "steps": 1000}') == []


@pytest.mark.parametrize(
    ("line", "steps", "epochs", "started"),
    [
        ("  Total optimization steps = 1,375", 1375, None, False),
        ("  total optimization steps / 学習ステップ数: 1000", 1000, None, False),
        ("max_train_steps=2000", 2000, None, False),
        ("  Num Epochs = 3", None, 3, False),
        ("  num epochs / epoch数: 2", None, 2, False),
        ("***** Running training *****", None, None, True),
        ("running training / 学習開始", None, None, True),
    ],
)
def test_setup_announcements(line, steps, epochs, started):
    reading = only(line)
    assert reading.kind == "setup"
    assert (reading.total_steps, reading.total_epochs, reading.training_started) == (steps, epochs, started)


def test_setup_lines_that_look_like_counters_are_not_progress():
    assert parse_line("  Gradient Accumulation steps = 1") == []
    assert parse_line("  num batches per epoch / 1epochのバッチ数: 500") == []
    assert parse_line("Generating baseline samples before training") == []


@pytest.mark.parametrize(
    ("text", "loss"),
    [
        ("lr: 4.0e-04 loss: 3.215e-01", 0.3215),
        ("loss=0.3", 0.3),
        ("{'loss': 0.41}", 0.41),
        ('{"train_loss": 0.5}', 0.5),
        ("avr_loss=0.123", 0.123),
        ("Train Loss: 1.5", 1.5),
        ("val_loss: 0.9, loss: 0.7", 0.7),
        ("eval loss: 0.9", None),
        ("loss_scale=1024", None),
        ("loss=nan", None),
        ("no numbers here", None),
    ],
)
def test_loss_extraction(text, loss):
    assert extract_loss(text) == (pytest.approx(loss) if loss is not None else None)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("flux_train_replicate", "training"),
        ("steps", "training"),
        ("Epoch 3", "training"),
        ("Loading checkpoint shards", "other"),
        ("Downloading shards", "other"),
        ("Fetching 3 files", "other"),
        ("Generating Images", "other"),
        ("Caching latents to disk", "other"),
        ("Validation DataLoader 0", "other"),
        ("Loading train data", "other"),
        ("", "unknown"),
    ],
)
def test_label_classes(label, expected):
    assert classify_label(label) == expected


@pytest.mark.parametrize(
    "line",
    ["", "   ", "\r\r\n", "%|||", "100%|", "step", "epoch /", "{'", "[00:00<?, ?it/s]", "💥 ünïcode 50%|"],
)
def test_garbage_never_raises_and_gives_nothing(line):
    assert parse_line(line) == []


# -- Replicate's bare form: "flux_train_replicate: 31%" ---------------------------------------


@pytest.mark.parametrize(
    ("line", "label", "percent"),
    [
        ("flux_train_replicate: 31%", "flux_train_replicate", 31.0),
        ("flux_train_replicate:  31%\n", "flux_train_replicate", 31.0),
        ("flux_train_replicate: 100%", "flux_train_replicate", 100.0),
        ("Caching latents: 100%", "Caching latents", 100.0),
    ],
)
def test_bare_percent_gives_a_bar_without_counts(line, label, percent):
    bar = only(line)
    assert (bar.kind, bar.label, bar.n, bar.total, bar.percent) == ("bar", label, None, None, percent)
    assert is_bare(bar)


def test_bare_percent_reads_the_rate_and_loss_of_a_bracketed_part():
    bar = only("flux_train_replicate:  31% [02:10<04:51,  2.37it/s, lr: 4.0e-04 loss: 3.215e-01]")
    assert bar.percent == 31.0
    assert bar.rate_per_s == pytest.approx(2.37)
    assert bar.loss == pytest.approx(0.3215)


def test_a_full_bar_is_never_read_as_bare():
    assert not is_bare(only(AI_TOOLKIT_BAR))
    assert not is_bare(only("Training: 310it [02:10,  2.37it/s, loss=0.321]"))


@pytest.mark.parametrize(
    "line",
    [
        "flux_train_replicate: 131%",  # not a percent of anything
        "flux_train_replicate:  31%|███",  # a cut-off full bar, not the bare form
        "flux_train_replicate: 31% of the way there, or so they say | really",
        ": 31%",
        "31%",
    ],
)
def test_what_is_not_the_bare_form(line):
    assert parse_line(line) == []


def test_steps_percent_line_stays_a_step_line():
    assert only("Steps: 45%").kind == "steps"

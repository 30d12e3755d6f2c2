"""Following a whole trainer log: which bar is training, monotone percent, rate, ETA, stages."""

from __future__ import annotations

import io
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubferry.domain.progress import stage_index
from hubferry.tracking import ProgressTracker, Snapshot, parse_log

# Replicate's ostris/flux-dev-lora-trainer (ai-toolkit), as its logs read: tqdm redraws with \r.
AI_TOOLKIT_LOG = """\
Running 1 job
{
    "type": "sd_trainer",
    "training_folder": "output",
    "device": "cuda:0",
    "network": {"type": "lora", "linear": 16, "linear_alpha": 16}
}
#############################################
# Running job: flux_train_replicate
#############################################
Running  1 process
Loading Flux model
Loading transformer
Quantizing transformer
Loading vae
Loading t5
Downloading shards: 100%|██████████| 2/2 [00:00<00:00, 4563.99it/s]
\rLoading checkpoint shards:   0%|          | 0/2 [00:00<?, ?it/s]\
\rLoading checkpoint shards:  50%|█████     | 1/2 [00:00<00:00,  2.43it/s]\
\rLoading checkpoint shards: 100%|██████████| 2/2 [00:00<00:00,  4.23it/s]
Quantizing T5
Loading clip
making pipe
preparing
create LoRA network. base dim (rank): 16, alpha: 16
create LoRA for Text Encoder: 0 modules.
create LoRA for U-Net: 494 modules.
enable LoRA for U-Net
Dataset: /tmp/tmpz0pkx6_n/input_images
  -  Preprocessing image dimensions
\r  0%|          | 0/12 [00:00<?, ?it/s]\r100%|██████████| 12/12 [00:00<00:00, 504.32it/s]
  -  Found 12 images
Bucket sizes for /tmp/tmpz0pkx6_n/input_images:
1024x1024: 12 files
1 buckets made
Caching latents for /tmp/tmpz0pkx6_n/input_images
 - Saving latents to disk
\rCaching latents to disk:   0%|          | 0/12 [00:00<?, ?it/s]\
\rCaching latents to disk: 100%|██████████| 12/12 [00:01<00:00,  7.21it/s]
Generating baseline samples before training
\rGenerating Images:   0%|          | 0/1 [00:00<?, ?it/s]\
\rGenerating Images: 100%|██████████| 1/1 [00:15<00:00, 15.01s/it]
\rflux_train_replicate:   0%|          | 0/1000 [00:00<?, ?it/s]\
\rflux_train_replicate:   0%|          | 1/1000 [00:02<39:41,  2.38s/it, lr: 4.0e-04 loss: 4.362e-01]
\rflux_train_replicate:  25%|██▌       | 250/1000 [01:45<05:16,  2.37it/s, lr: 4.0e-04 loss: 3.880e-01]
Generating Images:   0%|          | 0/1 [00:00<?, ?it/s]
Generating Images: 100%|██████████| 1/1 [00:15<00:00, 15.03s/it]
Saving at step 250
\rflux_train_replicate:  31%|███       | 310/1000 [02:10<04:51,  2.37it/s, lr: 4.0e-04 loss: 3.215e-01]
"""

KOHYA_LOG = """\
prepare images.
found directory /workspace/img/10_ohwx person contains 50 image files
caching latents.
checking cache validity...
100%|██████████| 50/50 [00:00<00:00, 3051.37it/s]
100%|██████████| 50/50 [00:12<00:00,  4.01it/s]
running training / 学習開始
  num train images * repeats / 学習画像の数×繰り返し回数: 500
  num reg images / 正則化画像の数: 0
  num batches per epoch / 1epochのバッチ数: 500
  num epochs / epoch数: 2
  batch size per device / バッチサイズ: 1
  gradient accumulation steps / 勾配を合計するステップ数 = 1
  total optimization steps / 学習ステップ数: 1000
steps:   0%|          | 0/1000 [00:00<?, ?it/s]
epoch 1/2
steps:  30%|███       | 300/1000 [03:20<07:46,  1.50it/s, avr_loss=0.141]
steps:  45%|████▌     | 450/1000 [05:00<06:06,  1.50it/s, avr_loss=0.123]
"""

TRANSFORMERS_LOG = """\
***** Running training *****
  Num examples = 1,000
  Num Epochs = 3
  Instantaneous batch size per device = 8
  Total train batch size (w. parallel, distributed & accumulation) = 8
  Gradient Accumulation steps = 1
  Total optimization steps = 375
  Number of trainable parameters = 124,439,808
  0%|          | 0/375 [00:00<?, ?it/s]
 13%|█▎        | 50/375 [00:10<01:05,  5.00it/s]{'loss': 2.1, 'grad_norm': 1.5, 'learning_rate': 4.5e-05, 'epoch': 0.4}
 33%|███▎      | 125/375 [00:25<00:50,  5.00it/s]
  0%|          | 0/63 [00:00<?, ?it/s]
 50%|█████     | 32/63 [00:01<00:01, 30.10it/s]
{'eval_loss': 1.9, 'eval_runtime': 2.1, 'epoch': 1.0}
 40%|████      | 150/375 [00:31<00:45,  5.00it/s]{'loss': 1.7, 'grad_norm': 1.1, 'learning_rate': 3e-05, 'epoch': 1.2}
"""


def test_ai_toolkit_log_follows_the_training_bar():
    snap = parse_log(AI_TOOLKIT_LOG)
    assert snap.stage == "training"
    assert (snap.percent, snap.step, snap.total_steps) == (31.0, 310, 1000)
    assert snap.loss == pytest.approx(0.3215)
    assert snap.rate_per_s == pytest.approx(2.37, rel=0.05)
    assert snap.eta_seconds == pytest.approx(690 / snap.rate_per_s)


def test_loading_bar_and_training_bar_with_total_steps_picks_the_matching_one():
    lines = [
        "  0%|          | 0/12 [00:00<?, ?it/s]",
        "  0%|          | 0/1000 [00:00<?, ?it/s]",
        " 50%|█████     | 6/12 [00:01<00:01,  6.00it/s]",
        "  5%|▌         | 50/1000 [00:20<06:20,  2.50it/s]",
        "100%|██████████| 12/12 [00:02<00:00,  6.00it/s]",
    ]
    snap = parse_log(lines, total_steps=1000)
    assert (snap.stage, snap.step, snap.total_steps, snap.percent) == ("training", 50, 1000, 5.0)


def test_without_total_steps_the_largest_total_wins_once_training_is_known():
    lines = [
        "***** Running training *****",
        "  0%|          | 0/12 [00:00<?, ?it/s]",
        "  0%|          | 0/1000 [00:00<?, ?it/s]",
        " 50%|█████     | 6/12 [00:01<00:01,  6.00it/s]",
        "  5%|▌         | 50/1000 [00:20<06:20,  2.50it/s]",
    ]
    snap = parse_log(lines)
    assert (snap.step, snap.total_steps, snap.percent) == (50, 1000, 5.0)


def test_sample_generation_during_training_changes_nothing():
    lines = [
        "flux_train_replicate:  25%|██▌       | 250/1000 [01:45<05:16,  2.37it/s, loss: 3.8e-01]",
        "Generating Images:  50%|█████     | 2/4 [00:30<00:30, 15.0s/it]",
        "Loading checkpoint shards: 100%|██████████| 3/3 [00:01<00:00,  2.00it/s]",
    ]
    snap = parse_log(lines)
    assert (snap.percent, snap.step, snap.total_steps) == (25.0, 250, 1000)
    assert snap.rate_per_s == pytest.approx(2.37)


def test_kohya_log():
    snap = parse_log(KOHYA_LOG)
    assert (snap.stage, snap.percent, snap.step, snap.total_steps) == ("training", 45.0, 450, 1000)
    assert snap.loss == pytest.approx(0.123)
    assert snap.rate_per_s == pytest.approx(1.5)


def test_kohya_caching_bars_before_training_do_not_hold_the_training_percent_at_100():
    tracker = ProgressTracker()
    tracker.feed("100%|██████████| 50/50 [00:12<00:00,  4.01it/s]")
    assert (tracker.snapshot().stage, tracker.snapshot().percent) == ("starting", 100.0)
    tracker.feed("steps:   2%|▏         | 20/1000 [00:13<10:53,  1.50it/s]")
    assert (tracker.snapshot().stage, tracker.snapshot().percent) == ("training", 2.0)


def test_transformers_log_ignores_the_evaluation_bar():
    snap = parse_log(TRANSFORMERS_LOG)
    assert (snap.stage, snap.step, snap.total_steps) == ("training", 150, 375)
    assert snap.percent == pytest.approx(40.0)
    assert snap.loss == pytest.approx(1.7)


def test_transformers_dicts_alone_give_progress_from_epochs():
    lines = [line for line in TRANSFORMERS_LOG.splitlines() if "%|" not in line]
    lines.append("{'loss': 1.7, 'grad_norm': 1.1, 'learning_rate': 3e-05, 'epoch': 1.2}")
    snap = parse_log(lines)
    assert snap.percent == pytest.approx(40.0)  # epoch 1.2 of 3
    assert snap.step == 150 and snap.total_steps == 375
    tracker = ProgressTracker(total_epochs=4)
    tracker.feed("{'loss': 0.41, 'learning_rate': 2e-05, 'epoch': 1.5}")
    assert tracker.snapshot().percent == pytest.approx(37.5)
    assert tracker.snapshot().total_steps is None


def test_trainer_dict_without_known_length_gives_loss_but_no_invented_percent():
    snap = parse_log(["{'loss': 0.41, 'learning_rate': 2e-05, 'epoch': 1.5}"])
    assert (snap.stage, snap.percent, snap.loss) == ("training", None, 0.41)


def test_step_epoch_and_percent_lines():
    assert parse_log(["step 150/1000 loss=0.3"]).percent == 15.0
    assert parse_log(["Step 150 of 1000"]).step == 150
    assert parse_log(["Steps: 45%"]).percent == 45.0
    assert parse_log(["epoch 3/10"]).percent == 20.0  # epoch 3 has started, 2 are done


def test_bar_without_total_uses_total_steps_when_given():
    line = "Training: 310it [02:10,  2.37it/s, loss=0.321]"
    assert parse_log([line]).percent is None
    snap = parse_log([line], total_steps=1000)
    assert (snap.percent, snap.step, snap.total_steps) == (31.0, 310, 1000)


def test_percent_never_goes_back_for_a_validation_or_restarted_bar():
    tracker = ProgressTracker()
    tracker.feed("steps:  60%|██████    | 600/1000 [05:00<03:20,  2.00it/s]")
    tracker.feed("Validation:  10%|█         | 1/10 [00:00<00:05,  2.00it/s]")
    assert tracker.snapshot().percent == 60.0
    tracker.feed("steps:   0%|          | 0/1000 [00:00<?, ?it/s]")
    snap = tracker.snapshot()
    assert snap.percent == 60.0 and snap.step == 0
    tracker.feed("steps:  70%|███████   | 700/1000 [05:50<02:30,  2.00it/s]")
    assert tracker.snapshot().percent == 70.0


def test_rate_from_timestamps_when_the_log_prints_none():
    tracker = ProgressTracker()
    tracker.feed("step 0/1000", at=100.0)
    tracker.feed("step 100/1000", at=110.0)
    tracker.feed("step 100/1000", at=110.0)
    snap = tracker.snapshot()
    assert snap.rate_per_s == pytest.approx(10.0)
    assert snap.eta_seconds == pytest.approx(90.0)


def test_printed_rate_is_smoothed():
    tracker = ProgressTracker(smoothing=0.5)
    tracker.feed("steps:  10%|█         | 100/1000 [00:50<07:30,  2.00it/s]")
    tracker.feed("steps:  10%|█         | 101/1000 [00:50<03:42,  4.00it/s]")
    assert tracker.snapshot().rate_per_s == pytest.approx(3.0)
    # A rate read 200 steps later (a sparsely sampled log) outweighs the old one.
    tracker.feed("steps:  30%|███       | 301/1000 [01:40<03:30,  3.33it/s]")
    assert tracker.snapshot().rate_per_s == pytest.approx(3.33)


def test_time_based_estimate_only_when_nothing_parses():
    tracker = ProgressTracker(expected_duration_s=200.0)
    tracker.feed("warming up the GPU", at=1000.0)
    tracker.feed("still going", at=1050.0)
    snap = tracker.snapshot()
    assert (snap.stage, snap.percent, snap.eta_seconds) == ("training", 25.0, 150.0)
    assert tracker.snapshot(now=2000.0).percent == 99.0  # overrun: capped, never "done"
    tracker.feed("steps: 100/1000", at=2001.0)
    assert tracker.snapshot().percent == 99.0  # within a stage it never goes back

    no_guess = ProgressTracker()
    no_guess.feed("warming up the GPU", at=1000.0)
    no_guess.feed("still going", at=1050.0)
    assert no_guess.snapshot().percent is None
    assert parse_log(["hello", "world"]).to_dict() == {
        "stage": "starting", "percent": None, "step": None, "total_steps": None,
        "loss": None, "rate_per_s": None, "eta_seconds": None,
    }


def test_real_progress_replaces_the_time_estimate_once_it_parses():
    tracker = ProgressTracker(expected_duration_s=1000.0)
    tracker.feed("booting", at=0.0)
    tracker.feed("steps:  20%|██        | 200/1000 [00:50<03:20,  4.00it/s]", at=50.0)
    tracker.snapshot(now=900.0)
    assert tracker.snapshot().percent == 20.0


def test_snapshot_dict_has_exactly_the_documented_keys():
    snap = parse_log(KOHYA_LOG)
    assert isinstance(snap, Snapshot)
    assert set(snap.to_dict()) == {
        "stage", "percent", "step", "total_steps", "loss", "rate_per_s", "eta_seconds",
    }
    assert snap.overall_percent == pytest.approx(5 + 0.9 * 45)


def test_parse_log_reads_text_and_binary_streams():
    assert parse_log(io.StringIO(KOHYA_LOG)).step == 450
    assert parse_log(io.BytesIO(KOHYA_LOG.encode() + b"\xff\xfe garbage\n")).step == 450


@pytest.mark.parametrize("bad", [0, -5, 1.5e400, True])
def test_bad_total_steps_is_rejected(bad):
    with pytest.raises(ValueError, match="total_steps"):
        parse_log([], total_steps=bad)


def test_a_100k_line_log_parses_quickly():
    chunk = KOHYA_LOG.splitlines() + AI_TOOLKIT_LOG.splitlines() + TRANSFORMERS_LOG.splitlines()
    lines = (chunk * (100_000 // len(chunk) + 1))[:100_000]
    started = time.perf_counter()
    parse_log(lines)
    assert time.perf_counter() - started < 3.0


# -- properties ------------------------------------------------------------------------------

labels = st.sampled_from(
    ["", "flux_train_replicate", "steps", "Epoch 1", "Loading checkpoint shards", "Generating Images",
     "Validation", "Downloading", "model.safetensors", "ünï 💥"]
)
counts = st.integers(min_value=0, max_value=5000)


@st.composite
def tqdm_lines(draw):
    total = draw(st.integers(min_value=1, max_value=5000))
    n = draw(st.integers(min_value=0, max_value=total + 10))
    rate = draw(st.sampled_from(["?it/s", "2.37it/s", "3.10s/it", "12.0MB/s"]))
    postfix = draw(st.sampled_from(["", ", loss=0.321", ", lr: 4.0e-04 loss: 3.215e-01", ", avr_loss=0.1"]))
    if draw(st.booleans()):
        return f"{draw(labels)}: {n}it [00:10, {rate}{postfix}]"
    printed = int(100 * n / total) if draw(st.booleans()) else draw(st.integers(0, 100))
    return f"{draw(labels)}: {printed:3d}%|███       | {n}/{total} [00:10<00:20, {rate}{postfix}]"


step_lines = st.one_of(
    st.builds("step {}/{}".format, counts, counts),
    st.builds("Step {} of {} loss={}".format, counts, counts, st.floats(0, 10)),
    st.builds("Steps: {}%".format, st.integers(0, 120)),
    st.builds("epoch {}/{}".format, counts, counts),
    st.builds("{{'loss': {}, 'learning_rate': 2e-05, 'epoch': {}}}".format, st.floats(0, 5), st.floats(0, 50)),
    st.sampled_from(["***** Running training *****", "  Num Epochs = 3", "  Total optimization steps = 375"]),
)
whole_lines = st.one_of(tqdm_lines(), step_lines, st.text(max_size=80))


@st.composite
def log_lines(draw):
    line = draw(whole_lines)
    if draw(st.integers(0, 4)) == 0:  # a partial line, cut anywhere
        line = line[: draw(st.integers(0, len(line)))]
    if draw(st.integers(0, 4)) == 0:  # several \r updates in one line
        line = "\r".join([line, *draw(st.lists(whole_lines, max_size=3))])
    return line


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(log_lines(), st.floats(0, 30)), max_size=40),
    st.one_of(st.none(), st.sampled_from([375, 1000]), counts.filter(bool)),
    st.one_of(st.none(), st.floats(1, 1000)),
)
def test_percent_is_monotone_within_a_stage_and_in_range(lines, total_steps, expected_duration_s):
    tracker = ProgressTracker(total_steps=total_steps, expected_duration_s=expected_duration_s)
    clock, previous = 0.0, tracker.snapshot()
    for line, delay in lines:
        clock += delay
        tracker.feed(line, at=clock)
        snap = tracker.snapshot()
        assert snap.percent is None or 0.0 <= snap.percent <= 100.0
        assert stage_index(snap.stage) >= stage_index(previous.stage)
        if snap.stage == previous.stage and previous.percent is not None:
            assert snap.percent is not None and snap.percent >= previous.percent
        assert 0.0 <= snap.overall_percent <= 100.0
        assert snap.overall_percent >= previous.overall_percent
        assert snap.rate_per_s is None or snap.rate_per_s > 0
        assert snap.eta_seconds is None or snap.eta_seconds >= 0
        previous = snap


def test_ai_toolkit_log_stays_in_starting_until_the_training_bar_appears():
    tracker = ProgressTracker(total_steps=1000)
    stages = []
    for line in AI_TOOLKIT_LOG.splitlines():
        tracker.feed(line)
        stages.append((tracker.snapshot().stage, "flux_train_replicate:" in line))
    first_training = stages.index(("training", True))
    assert all(stage == "starting" for stage, _ in stages[:first_training])
    assert all(stage == "training" for stage, _ in stages[first_training:])


# -- Replicate's flux trainer as its training's `logs` reads (providers.md §4.3) ---------------

# Every tqdm refresh is its own \n-terminated line on Replicate; preprocessing bars come first.
REPLICATE_PREAMBLE = """\
Extracted 12 files from zip to input_images
downloading to:  /src/llava-v1.5-13b
downloading took:  3.41
Caption for input_images/IMG_0001.jpg: A photo of TOK, a man with short brown hair wearing a grey sweater
IMG_0002.jpg is already captioned
Starting train job
{
    "type": "custom_sd_trainer",
    "training_folder": "output",
    "device": "cuda:0",
    "trigger_word": "TOK"
}
Running  1 process

#############################################
# Running job: flux_train_replicate
#############################################

Loading Flux model
Loading transformer
Quantizing transformer
Loading vae
Loading t5
Quantizing T5
Loading clip
making pipe
preparing
create LoRA network. base dim (rank): 16, alpha: 16
neuron dropout: p=None, rank dropout: p=None, module dropout: p=None
create LoRA for Text Encoder: 0 modules.
create LoRA for U-Net: 494 modules.
enable LoRA for U-Net
Dataset: input_images
  -  Preprocessing image dimensions
100%|██████████| 12/12 [00:00<00:00, 1500.12it/s]
  -  Found 12 images
Bucket sizes for input_images:
512x512: 12 files
1 buckets made
Caching latents for input_images
 - Keeping latents in memory
Caching latents: 100%|██████████| 12/12 [00:01<00:00,  7.10it/s]
Caching latents: 100%|██████████| 12/12 [00:01<00:00,  7.31it/s]
Caching latents: 100%|██████████| 12/12 [00:02<00:00,  5.02it/s]
Generating baseline samples before training
"""
REPLICATE_TRAINING = """\
flux_train_replicate:   0%|          | 0/1000 [00:00<?, ?it/s]
flux_train_replicate:   0%|          | 0/1000 [00:03<?, ?it/s, lr: 4.0e-04 loss: 4.112e-01]
flux_train_replicate:   0%|          | 1/1000 [00:04<1:08:15,  4.10s/it, lr: 4.0e-04 loss: 4.112e-01]
flux_train_replicate:  31%|███       | 310/1000 [02:10<04:51,  2.37it/s, lr: 4.0e-04 loss: 3.215e-01]
flux_train_replicate:  50%|█████     | 500/1000 [07:01<07:01,  1.19it/s, lr: 4.0e-04 loss: 2.874e-01]
flux_train_replicate: 100%|█████████▉| 999/1000 [14:03<00:00,  1.19it/s, lr: 4.0e-04 loss: 3.377e-01]
flux_train_replicate: 100%|██████████| 1000/1000 [14:03<00:00,  1.18it/s, lr: 4.0e-04 loss: 3.377e-01]
"""
REPLICATE_POSTAMBLE = """\

Saved to output/flux_train_replicate/optimizer.pt
output/flux_train_replicate/
output/flux_train_replicate/lora.safetensors
output/flux_train_replicate/config.yaml
output/flux_train_replicate/captions/
output/flux_train_replicate/captions/IMG_0001.txt
Uploading to Hugging Face: me/my-flux-lora
HF Repo URL: https://huggingface.co/me/my-flux-lora
"""
REPLICATE_BARE_TRAINING = """\
flux_train_replicate:   0%
flux_train_replicate:   0%
flux_train_replicate:  12%
flux_train_replicate:  31%
flux_train_replicate:  50%
"""


@pytest.mark.parametrize("total_steps", [None, 1000])
def test_replicate_log_fed_line_by_line(total_steps):
    tracker = ProgressTracker(total_steps=total_steps)
    for line in REPLICATE_PREAMBLE.splitlines(keepends=True):
        tracker.feed(line)
        assert tracker.stage == "starting", line  # the 12/12 and Caching latents bars are not training
    seen = []
    for line in REPLICATE_TRAINING.splitlines(keepends=True):
        tracker.feed(line)
        snap = tracker.snapshot()
        seen.append((snap.stage, snap.percent, snap.step, snap.total_steps))
    assert seen[0] == ("training", 0.0, 0, 1000)
    assert seen[3] == ("training", 31.0, 310, 1000)
    assert seen[5] == ("training", pytest.approx(99.9), 999, 1000)  # printed 100%, but a step is left
    assert seen[6] == ("training", 100.0, 1000, 1000)
    for line in REPLICATE_POSTAMBLE.splitlines(keepends=True):
        tracker.feed(line)
    snap = tracker.snapshot()
    assert (snap.stage, snap.percent, snap.step, snap.total_steps) == ("training", 100.0, 1000, 1000)
    assert snap.loss == pytest.approx(0.3377)


def test_replicate_log_cut_mid_training_reports_where_it_is():
    snap = parse_log(REPLICATE_PREAMBLE + REPLICATE_TRAINING.split("flux_train_replicate:  50%")[0])
    assert (snap.stage, snap.percent, snap.step, snap.total_steps) == ("training", 31.0, 310, 1000)
    assert snap.loss == pytest.approx(0.3215)
    assert snap.rate_per_s is not None and snap.eta_seconds == pytest.approx(690 / snap.rate_per_s)


@pytest.mark.parametrize("total_steps", [None, 1000])
def test_replicate_bare_form_is_the_training_percent(total_steps):
    tracker = ProgressTracker(total_steps=total_steps)
    for line in REPLICATE_PREAMBLE.splitlines(keepends=True):
        tracker.feed(line)
    assert tracker.stage == "starting"
    percents = []
    for line in REPLICATE_BARE_TRAINING.splitlines(keepends=True):
        tracker.feed(line)
        percents.append(tracker.snapshot().percent)
    assert percents == [0.0, 0.0, 12.0, 31.0, 50.0]
    snap = tracker.snapshot()
    assert (snap.stage, snap.step, snap.total_steps) == ("training", None, total_steps)  # no step is invented
    assert snap.eta_seconds is None


def test_bare_form_yields_to_a_bar_with_counts():
    snap = parse_log(["flux_train_replicate: 45%", "flux_train_replicate:  31%|███       | 310/1000 [02:10<04:51, "
                      " 2.37it/s, lr: 4.0e-04 loss: 3.215e-01]", "flux_train_replicate: 99%",
                      "flux_train_replicate:  40%|████      | 400/1000 [02:50<04:13,  2.37it/s]"])
    assert (snap.percent, snap.step, snap.total_steps) == (45.0, 400, 1000)  # never goes back; counts followed


def test_bare_preprocessing_and_unlabelled_bars_are_not_training():
    snap = parse_log(["Caching latents: 100%", "100%|██████████| 12/12 [00:00<00:00, 1500.12it/s]",
                      "GPU util: 87%"], total_steps=1000)
    assert snap.stage == "starting"
    late = parse_log(["flux_train_replicate: 20%", "GPU util: 87%", "Caching latents: 100%",
                      "100%|██████████| 12/12 [00:00<00:00, 1500.12it/s]"])
    assert (late.stage, late.percent) == ("training", 20.0)


def test_logs_parse_cli_reads_the_bare_form(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hubferry.cli import app

    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    log = tmp_path / "replicate.log"
    log.write_text(REPLICATE_PREAMBLE + REPLICATE_BARE_TRAINING, encoding="utf-8")
    result = CliRunner().invoke(app, ["logs", "parse", str(log)])
    assert result.exit_code == 0, result.output
    snap = json.loads(result.stdout)
    assert (snap["stage"], snap["percent"], snap["step"]) == ("training", 50.0, None)
    stdin = "flux_train_replicate: 31%\n"
    piped = CliRunner().invoke(app, ["logs", "parse", "-", "--total-steps", "1000"], input=stdin)
    assert piped.exit_code == 0, piped.output
    piped_snap = json.loads(piped.stdout)
    assert (piped_snap["percent"], piped_snap["total_steps"]) == (31.0, 1000)

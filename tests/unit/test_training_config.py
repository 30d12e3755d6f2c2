"""The LLM training config: valid configs per method, and every kind of mistake named with its place."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

import hubferry.training_config as tc
from hubferry.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SFT = """
method = "sft"
dataset = "alice/chats"
[model]
base = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""


def problems(text: str, fmt: str = "toml") -> list[str]:
    with pytest.raises(ValidationError) as info:
        tc.loads(text, fmt=fmt, source="job")
    return [p["message"] for p in info.value.context["problems"]]


def only_problem(text: str, fmt: str = "toml") -> ValidationError:
    with pytest.raises(ValidationError) as info:
        tc.loads(text, fmt=fmt, source="job")
    assert len(info.value.context["problems"]) == 1, info.value.message
    return info.value


def test_public_surface_is_exactly_all() -> None:
    public = {name for name in vars(tc) if not name.startswith("_")} - {"annotations"}
    modules = {name for name, value in vars(tc).items() if type(value).__name__ == "module"}
    assert public - modules == set(tc.__all__)


def test_sft_defaults_one_epoch_and_a_lora() -> None:
    config = tc.loads(SFT)
    assert isinstance(config, tc.SftConfig)
    assert config.training.epochs == 1 and config.training.max_steps is None
    assert config.lora is not None and config.lora.r == 16 and config.lora.target_modules == "all-linear"
    assert config.output.repo is None and config.output.private is True
    assert not config.dataset_is_local


def test_dpo_and_orpo_carry_their_beta() -> None:
    dpo = tc.loads(SFT.replace('"sft"', '"dpo"') + "[training]\nmax_steps = 50\n[dpo]\nbeta = 0.3\n")
    assert isinstance(dpo, tc.DpoConfig) and dpo.dpo.beta == 0.3 and dpo.training.epochs is None
    orpo = tc.loads(SFT.replace('"sft"', '"orpo"') + "[orpo]\nbeta = 0.2\n")
    assert isinstance(orpo, tc.OrpoConfig) and orpo.orpo.beta == 0.2


def test_full_finetune_has_no_adapter() -> None:
    config = tc.loads('full_finetune = true\n' + SFT)
    assert config.lora is None and "full fine-tune" in config.summary()


def test_local_dataset_and_output_repo() -> None:
    config = tc.loads(SFT.replace("alice/chats", "data/train.jsonl") + '[output]\nrepo = "alice/smol-sft"\n')
    assert config.dataset_is_local and config.output.repo == "alice/smol-sft"


def test_yaml_reads_like_toml(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("method: orpo\ndataset: alice/prefs\nmodel:\n  base: gpt2\ntraining:\n  learning_rate: 1e-5\n"
                    "lora:\n  target_modules: [q_proj, v_proj]\n")
    config = tc.load(path)
    assert isinstance(config, tc.OrpoConfig)
    assert config.training.learning_rate == 1e-5 and config.lora and config.lora.target_modules == ["q_proj", "v_proj"]


def test_top_level_key_says_which_section_it_belongs_to() -> None:
    error = only_problem("num_epochs = 3\n" + SFT)
    assert "num_epochs belongs under training:" in error.message and error.context["field"] == "num_epochs"


def test_key_in_the_wrong_section_names_the_right_one() -> None:
    assert problems(SFT + "[training]\nr = 8\n") == ["training.r belongs under lora: (as lora.r) (line 7)"]


def test_typo_suggests_the_close_spelling() -> None:
    [line] = problems(SFT + "[training]\nlearnig_rate = 1e-4\n")
    assert "did you mean training.learning_rate?" in line and line.startswith("training.learnig_rate")
    [line] = problems("trainng = {}\n" + SFT)
    assert "did you mean training?" in line


def test_unknown_key_without_suggestion_lists_the_known_ones() -> None:
    error = only_problem(SFT + "[lora]\nzzz = 1\n")
    assert "lora.zzz is not a known key" in error.message and "target_modules" in error.hint


def test_wrong_type_and_out_of_range() -> None:
    lines = problems(SFT + '[training]\nlearning_rate = 0.5\nmax_steps = "100"\nper_device_batch_size = 0\n'
                     '[output]\nprivate = "no"\n')
    assert "training.learning_rate: should be less than or equal to 0.01 (got 0.5) (line 7)" in lines
    assert any(line.startswith("training.max_steps: should be a valid integer") for line in lines)
    assert any(line.startswith("training.per_device_batch_size: should be greater than or equal to 1")
               for line in lines)
    assert any(line.startswith("output.private:") for line in lines)
    assert len(lines) == 4


def test_booleans_are_not_numbers() -> None:
    [line] = problems(SFT + "[lora]\ndropout = true\n")
    assert line.startswith("lora.dropout: should be a number")


def test_epochs_and_steps_exclude_each_other() -> None:
    error = only_problem(SFT + "[training]\nnum_epochs = 2\nmax_steps = 10\n")
    assert error.context["field"] == "training" and "not both" in error.message


def test_method_specifics_only_for_their_method() -> None:
    [line] = problems(SFT + "[dpo]\nbeta = 0.1\n")
    assert line == 'dpo.beta is only allowed with method = "dpo" (this config\'s method is "sft") (line 7)'
    [line] = problems("beta = 0.1\n" + SFT.replace('"sft"', '"orpo"'))
    assert line == "beta belongs under orpo: (as orpo.beta) (line 1)"


def test_yaml_problems_name_their_line() -> None:
    lines = problems("method: sft\ndataset: alice/x\nmodel:\n  base: gpt2\ntraining:\n  max_steps: 0\n"
                     "  lora_r: 8\noutput: {repo: nope}\n", fmt="yaml")
    assert lines[0].endswith("(line 7)") and lines[0].startswith("training.lora_r")
    assert lines[1] == "training.max_steps: should be greater than or equal to 1 (got 0) (line 6)"
    assert lines[2].startswith("output.repo:") and lines[2].endswith("(line 8)")


def test_lora_and_full_finetune_exclude_each_other() -> None:
    error = only_problem("full_finetune = true\n" + SFT + "[lora]\nr = 8\n")
    assert error.context["field"] == "lora" and "exclude each other" in error.message


@pytest.mark.parametrize(("key", "value"), [("output.repo", "no-namespace"), ("output.repo", "a/b/c"),
                                            ("model.base", "bad--name/x"), ("dataset", "just-a-name")])
def test_bad_hub_ids(key: str, value: str) -> None:
    section, _, leaf = key.rpartition(".")
    text = SFT.replace("alice/chats", value) if key == "dataset" else (
        SFT.replace("HuggingFaceTB/SmolLM2-135M-Instruct", value) if key == "model.base"
        else SFT + f'[{section}]\n{leaf} = "{value}"\n')
    error = only_problem(text)
    assert error.context["field"] == key and value in error.message


def test_missing_and_unknown_method_still_check_the_rest() -> None:
    lines = problems('dataset = "alice/x"\n[training]\nlearning_rate = 9\n')
    assert lines[0] == "method is required"
    assert "model: is required" in lines and any(line.startswith("training.learning_rate") for line in lines)
    assert problems(SFT.replace('"sft"', '"ppo"'))[0].startswith("method should be one of sft, dpo, orpo")


def test_every_problem_is_reported_at_once_one_per_line() -> None:
    with pytest.raises(ValidationError) as info:
        tc.loads('num_epochs = 1\nlearning_rat = 1\n' + SFT + '[lora]\nr = 0\n[output]\nrepo = "x"\n',
                 source="job.toml")
    lines = info.value.message.splitlines()
    assert lines[0] == "job.toml has 4 problems:" and len(lines) == 5
    assert info.value.context["field"] == "num_epochs"
    assert pickle.loads(pickle.dumps(info.value)).context["problems"] == info.value.context["problems"]


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    toml = tmp_path / "job.toml"
    toml.write_text('method = "sft"\nmodel = {base = \n')
    with pytest.raises(ValidationError, match="line 2"):
        tc.load(toml)
    yaml_file = tmp_path / "job.yml"
    yaml_file.write_text("method: sft\n model: x\n")
    with pytest.raises(ValidationError, match="line 2") as info:
        tc.load(yaml_file)
    assert info.value.context["line"] == 2


def test_yaml_alias_bomb_is_reported_not_expanded() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
    lines = problems(bomb.replace("a: &a", "x_a: &a") + "method: sft\ndataset: alice/x\nmodel: {base: gpt2}\n"
                     "lora: {r: *i, target_modules: *i}\n", fmt="yaml")
    assert "lora.r: should be a valid integer (got a list of 10 items) (line 13)" in lines


def test_top_level_must_be_a_table() -> None:
    assert "it is a list" in problems("- a\n- b\n", fmt="yaml")[0]
    assert "it is empty" in problems("", fmt="yaml")[0]


def test_file_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * tc.MAX_CONFIG_BYTES)
    with pytest.raises(ValidationError, match="larger than 1 MiB"):
        tc.load(big)
    with pytest.raises(ValidationError, match="cannot read") as info:
        tc.load(tmp_path / "missing.toml")
    assert info.value.category == "file_error"


@pytest.mark.parametrize("name", ["runpod_sft.toml", "runpod_dpo.toml"])
def test_examples_are_valid(name: str) -> None:
    config = tc.load(EXAMPLES / name)
    assert config.method == name.removeprefix("runpod_").removesuffix(".toml")


# Dataset columns.

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PREF = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def test_columns_accepted_per_method() -> None:
    assert tc.check_rows("sft", [CHAT, {"prompt": "a", "completion": "b"}]) == 2
    assert tc.check_rows("dpo", [PREF] * 3) == 3
    assert tc.check_rows("orpo", [{**PREF, "chosen": CHAT["messages"]}]) == 1


def test_dpo_without_rejected_says_so_naming_the_row() -> None:
    with pytest.raises(ValidationError) as info:
        tc.check_rows("dpo", [PREF, {"prompt": "a", "chosen": "b"}])
    assert info.value.message == ("dataset: row 2 has no 'rejected' column "
                                  "(DPO needs prompt, chosen and rejected)")
    assert info.value.context["field"] == "dataset"


def test_sft_row_problems() -> None:
    with pytest.raises(ValidationError) as info:
        tc.check_rows("sft", [PREF, {"prompt": "a"}, {"messages": [{"role": "bot", "content": "x"}]}])
    lines = info.value.message.splitlines()
    assert "row 1 has neither messages nor prompt/completion" not in lines[1]  # row 1 has prompt
    assert "row 1 has no 'completion' column" in lines[1] and "row 2 has no 'completion' column" in lines[2]
    assert "row 3: messages message 0 has role 'bot'" in lines[3]


def test_no_rows_and_many_problems_are_bounded() -> None:
    with pytest.raises(ValidationError, match="has no rows"):
        tc.check_rows("sft", [])
    with pytest.raises(ValidationError) as info:
        tc.check_rows("orpo", ({"prompt": "x"} for _ in range(10_000)))
    assert info.value.message.splitlines()[-1].strip().endswith("more problems")


def test_read_jsonl_first_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(PREF) for _ in range(500)) + "\n")
    assert len(tc.read_rows(path, max_rows=7)) == 7
    path.write_text(json.dumps(PREF) + "\n\n{oops\n")
    with pytest.raises(ValidationError, match="line 3 is not valid JSON") as info:
        tc.read_rows(path)
    assert info.value.context["line"] == 3
    path.write_text("[1, 2]\n")
    with pytest.raises(ValidationError, match="line 1 is a JSON list"):
        tc.read_rows(path)
    with pytest.raises(ValidationError, match="does not exist"):
        tc.read_rows(tmp_path / "nope.jsonl")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ValidationError, match="needs pyarrow") as info:
        tc.read_rows(path)
    assert "pip install pyarrow" in info.value.hint

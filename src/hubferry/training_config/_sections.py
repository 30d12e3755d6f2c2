"""The typed training configuration: one pydantic model per section and one per method (SFT, DPO, ORPO)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, field_validator, model_validator
from pydantic_core import PydanticCustomError

from hubferry.domain.naming import repo_name_problem, validate_repo_id
from hubferry.errors import ValidationError

Method = Literal["sft", "dpo", "orpo"]
#: The methods, in the order they are documented.
METHODS: tuple[str, ...] = ("sft", "dpo", "orpo")
#: File suffixes that make ``dataset`` a local file to stage rather than a Hub dataset id.
LOCAL_DATASET_SUFFIXES = (".jsonl", ".parquet")
#: Epochs used when neither ``training.num_epochs`` nor ``training.max_steps`` is given.
DEFAULT_EPOCHS = 1.0


def _number(value: Any) -> Any:
    # TOML and YAML both have booleans, which pydantic would silently read as 1 and 0.
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "should be a number, not {value}", {"value": str(value).lower()})
    return value


Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, Field(strict=True)]  # lax mode would read "no" as false


def _target_modules(value: Any) -> str | list[str]:
    # One validator instead of a union, so a wrong value gives one message rather than one per union member.
    if value == "all-linear":
        return "all-linear"
    if not isinstance(value, list) or not value:
        raise PydanticCustomError("target_modules", 'should be "all-linear" or a non-empty list of module names')
    if not all(isinstance(name, str) and name.strip() for name in value):
        raise PydanticCustomError("target_modules", "module names should be non-empty strings")
    return list(value)


TargetModules = Annotated[str | list[str], PlainValidator(_target_modules, json_schema_input_type=str | list[str])]


def lora_conflict(data: Any) -> bool:
    """Whether raw config ``data`` asks for both a LoRA adapter and a full fine-tune."""
    return isinstance(data, dict) and data.get("full_finetune") is True and data.get("lora") is not None


def _hub_id(value: str, *, what: str, allow_bare: bool) -> str:
    """``value`` if the Hub would accept it as a repository id; a pydantic error carrying the hint otherwise."""
    if allow_bare and "/" not in value:  # legacy root-level models such as ``gpt2``
        problem = repo_name_problem(value)
        if problem:
            raise PydanticCustomError("repo_id", f"{what} {{value!r}} {problem}", {"value": value})
        return value
    try:
        return validate_repo_id(value, field=what)
    except ValidationError as error:
        raise PydanticCustomError("repo_id", error.message.replace("{", "{{").replace("}", "}}"),
                                  {"hint": error.hint}) from None


class Section(BaseModel):
    """Every section refuses keys it does not know and is immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    """What to fine-tune."""

    base: str = Field(description="The Hub model id to start from, e.g. Qwen/Qwen2.5-0.5B-Instruct.")

    @field_validator("base")
    @classmethod
    def _base_is_hub_id(cls, value: str) -> str:
        return _hub_id(value, what="model id", allow_bare=True)


class TrainingSection(Section):
    """How long and how hard to train. Give ``num_epochs`` or ``max_steps``, not both; neither means one epoch."""

    num_epochs: Float | None = Field(None, gt=0, le=100, description="Passes over the dataset (may be fractional).")
    max_steps: Int | None = Field(None, ge=1, le=1_000_000, description="Optimizer steps; replaces num_epochs.")
    learning_rate: Float = Field(2e-4, gt=0, le=1e-2)
    per_device_batch_size: Int = Field(1, ge=1, le=512)
    gradient_accumulation: Int = Field(1, ge=1, le=1024)
    max_seq_len: Int = Field(2048, ge=16, le=131_072, description="Tokens per example; longer ones are truncated.")

    @model_validator(mode="after")
    def _epochs_xor_steps(self) -> TrainingSection:
        if self.num_epochs is not None and self.max_steps is not None:
            raise PydanticCustomError(
                "epochs_and_steps", "give training.num_epochs or training.max_steps, not both",
                {"hint": "max_steps fixes the length in optimizer steps; num_epochs in passes over the data"})
        return self

    @property
    def epochs(self) -> float | None:
        """The number of epochs to run, or ``None`` when ``max_steps`` decides."""
        if self.max_steps is not None:
            return None
        return DEFAULT_EPOCHS if self.num_epochs is None else self.num_epochs


class LoraSection(Section):
    """A LoRA adapter (the default); ``full_finetune = true`` trains every weight instead."""

    r: Int = Field(16, ge=1, le=1024, description="Rank of the adapter matrices.")
    alpha: Int = Field(32, ge=1, le=4096, description="Scaling numerator (the adapter is scaled by alpha / r).")
    dropout: Float = Field(0.05, ge=0, lt=1)
    target_modules: TargetModules = Field("all-linear", description='Module names to adapt, or "all-linear".')


class DpoSection(Section):
    """Direct Preference Optimization."""

    beta: Float = Field(0.1, gt=0, le=10, description="How far the policy may move from the reference model.")


class OrpoSection(Section):
    """Odds Ratio Preference Optimization (no reference model)."""

    beta: Float = Field(0.1, gt=0, le=10, description="Weight of the odds-ratio term against the SFT loss.")


class OutputSection(Section):
    """Where the result is published."""

    repo: str | None = Field(None, description="namespace/name on the Hub; unset means named after the job.")
    private: Bool = True

    @field_validator("repo")
    @classmethod
    def _repo_is_hub_id(cls, value: str | None) -> str | None:
        return None if value is None else _hub_id(value, what="repo id", allow_bare=False)


class BaseTrainingConfig(Section):
    """What every method shares."""

    method: Method
    model: ModelSection
    dataset: str = Field(description="A Hub dataset id (owner/name) or a local .jsonl / .parquet file to stage.")
    training: TrainingSection = TrainingSection()
    full_finetune: Bool = False
    lora: LoraSection | None = None
    output: OutputSection = OutputSection()

    @field_validator("dataset")
    @classmethod
    def _dataset_is_id_or_file(cls, value: str) -> str:
        if value.lower().endswith(LOCAL_DATASET_SUFFIXES):
            return value
        if value.lower().endswith((".json", ".csv", ".txt", ".arrow")):
            raise PydanticCustomError("dataset_format", "local datasets must be JSONL (.jsonl) or Parquet (.parquet)")
        return _hub_id(value, what="dataset id", allow_bare=False)

    @model_validator(mode="before")
    @classmethod
    def _lora_or_full(cls, data: Any) -> Any:
        if lora_conflict(data):
            raise PydanticCustomError(
                "lora_and_full", "lora and full_finetune = true exclude each other",
                {"hint": "drop the lora section to train every weight, or full_finetune to train an adapter"})
        if isinstance(data, dict) and data.get("full_finetune") in (None, False) and data.get("lora") is None:
            data = {**data, "lora": {}}
        return data

    @property
    def dataset_is_local(self) -> bool:
        """Whether ``dataset`` names a local file (to be staged) rather than a Hub dataset."""
        return self.dataset.lower().endswith(LOCAL_DATASET_SUFFIXES)

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step on one device."""
        return self.training.per_device_batch_size * self.training.gradient_accumulation

    def summary(self) -> str:
        """One line for people: method, base model, dataset, length and adapter."""
        t = self.training
        length = f"{t.max_steps} steps" if t.epochs is None else f"{t.epochs:g} epoch{'s' if t.epochs != 1 else ''}"
        adapter = "full fine-tune"
        if self.lora is not None:
            modules = self.lora.target_modules
            adapter = (f"LoRA r={self.lora.r} alpha={self.lora.alpha} dropout={self.lora.dropout:g} "
                       f"on {modules if isinstance(modules, str) else ','.join(modules)}")
        target = self.output.repo or "an automatic repo name"
        return (f"{self.method.upper()} of {self.model.base} on {self.dataset}: {length}, lr {t.learning_rate:g}, "
                f"batch {t.per_device_batch_size}x{t.gradient_accumulation}, max_seq_len {t.max_seq_len}; "
                f"{adapter}; publishes to {target} ({'private' if self.output.private else 'public'})")


class SftConfig(BaseTrainingConfig):
    """Supervised fine-tuning on ``messages`` or ``prompt``/``completion`` rows."""

    method: Literal["sft"]


class DpoConfig(BaseTrainingConfig):
    """Direct Preference Optimization on ``prompt``/``chosen``/``rejected`` rows."""

    method: Literal["dpo"]
    dpo: DpoSection = DpoSection()


class OrpoConfig(BaseTrainingConfig):
    """ORPO on ``prompt``/``chosen``/``rejected`` rows."""

    method: Literal["orpo"]
    orpo: OrpoSection = OrpoSection()


TrainingConfig = Annotated[SftConfig | DpoConfig | OrpoConfig, Field(discriminator="method")]
"""Any method's configuration; ``config.method`` tells which."""

#: Top-level sections (tables) and the model of each; ``dpo``/``orpo`` only exist for their method.
SECTIONS: dict[str, type[Section]] = {
    "model": ModelSection, "training": TrainingSection, "lora": LoraSection,
    "dpo": DpoSection, "orpo": OrpoSection, "output": OutputSection,
}
#: Sections that belong to a single method.
METHOD_SECTIONS = {"dpo": "dpo", "orpo": "orpo"}
#: Top-level keys that are plain values, not sections.
TOP_LEVEL_VALUES = ("method", "dataset", "full_finetune")

"""The configuration of an LLM fine-tune (SFT, DPO, ORPO), shared by the CLI, the API and the in-pod agent.

``load("job.toml")`` returns a :class:`SftConfig`, :class:`DpoConfig` or :class:`OrpoConfig` (annotated
together as :data:`TrainingConfig`), or raises one ``ValidationError`` that lists every problem.
"""

from __future__ import annotations

from hubferry.training_config._columns import (
    MAX_CHECKED_ROWS,
    can_read_parquet,
    check_rows,
    read_rows,
    required_columns,
)
from hubferry.training_config._keys import LEAF_SECTIONS
from hubferry.training_config._loading import MAX_CONFIG_BYTES, TrainingConfigModel, load, loads, parse
from hubferry.training_config._problems import Problem
from hubferry.training_config._sections import (
    METHODS,
    BaseTrainingConfig,
    DpoConfig,
    DpoSection,
    LoraSection,
    Method,
    ModelSection,
    OrpoConfig,
    OrpoSection,
    OutputSection,
    SftConfig,
    TrainingConfig,
    TrainingSection,
)

__all__ = [
    "LEAF_SECTIONS",
    "MAX_CHECKED_ROWS",
    "MAX_CONFIG_BYTES",
    "METHODS",
    "BaseTrainingConfig",
    "DpoConfig",
    "DpoSection",
    "LoraSection",
    "Method",
    "ModelSection",
    "OrpoConfig",
    "OrpoSection",
    "OutputSection",
    "Problem",
    "SftConfig",
    "TrainingConfig",
    "TrainingConfigModel",
    "TrainingSection",
    "can_read_parquet",
    "check_rows",
    "load",
    "loads",
    "parse",
    "read_rows",
    "required_columns",
]

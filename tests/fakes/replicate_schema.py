"""The flux trainer's published OpenAPI schema, and the input validation Replicate does against it.

The ``TrainingInput`` properties are what Cog generates from ``def train(...)`` in
replicate/flux-fine-tuner ``train.py`` (the code behind ``ostris/flux-dev-lora-trainer``):
``Input(ge=, le=)`` become ``minimum``/``maximum``, ``Path`` a ``format: uri`` string, ``Secret`` a
``format: password`` string, and an input whose default is ``None`` has no ``default``. ``optimizer`` is
a plain string there (its choices are only named in the description), so it carries no ``enum``.
"""

from __future__ import annotations

import copy
from typing import Any

TRAINER_OWNER = "ostris"
TRAINER_NAME = "flux-dev-lora-trainer"
#: The pinned version hubferry's settings name (one of the known public ids).
TRAINER_VERSION = "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
COG_VERSION = "0.9.21"


def _prop(order: int, type_: str, title: str, description: str | None = None, **extra: Any) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": type_, "title": title, "x-order": order}
    if description is not None:
        prop["description"] = description
    prop.update(extra)
    return prop


_TRAINING_PROPERTIES: dict[str, dict[str, Any]] = {
    "input_images": _prop(0, "string", "Input Images", "A zip file containing the images that will be used for "
                          "training. We recommend a minimum of 10 images.", format="uri"),
    "trigger_word": _prop(1, "string", "Trigger Word", "The trigger word refers to the object, style or concept "
                          "you are training on.", default="TOK"),
    "autocaption": _prop(2, "boolean", "Autocaption", "Automatically caption images using Llava v1.5 13B",
                         default=True),
    "autocaption_prefix": _prop(3, "string", "Autocaption Prefix", "Optional: Text you want to appear at the "
                                "beginning of all your generated captions."),
    "autocaption_suffix": _prop(4, "string", "Autocaption Suffix", "Optional: Text you want to appear at the end "
                                "of all your generated captions."),
    "steps": _prop(5, "integer", "Steps", "Number of training steps. Recommended range 500-4000",
                   default=1000, minimum=3, maximum=6000),
    "learning_rate": _prop(6, "number", "Learning Rate", "Learning rate, if you’re new to training you probably "
                           "don’t need to change this.", default=0.0004),
    "batch_size": _prop(7, "integer", "Batch Size", "Batch size, you can leave this as 1", default=1),
    "resolution": _prop(8, "string", "Resolution", "Image resolutions for training", default="512,768,1024"),
    "lora_rank": _prop(9, "integer", "Lora Rank", "Higher ranks take longer to train but can capture more "
                       "complex features.", default=16, minimum=1, maximum=128),
    "caption_dropout_rate": _prop(10, "number", "Caption Dropout Rate", "Advanced setting. Determines how often "
                                  "a caption is ignored.", default=0.05, minimum=0, maximum=1),
    "optimizer": _prop(11, "string", "Optimizer", "Optimizer to use for training. Supports: prodigy, adam8bit, "
                       "adamw8bit, lion8bit, adam, adamw, lion, adagrad, adafactor.", default="adamw8bit"),
    "cache_latents_to_disk": _prop(12, "boolean", "Cache Latents To Disk", "Use this if you have lots of input "
                                   "images and you hit out of memory errors", default=False),
    "layers_to_optimize_regex": _prop(13, "string", "Layers To Optimize Regex", "Regular expression to match "
                                      "specific layers to optimize."),
    # train.py misspells this one's keyword (``descripton=``), so Cog publishes it without a description.
    "gradient_checkpointing": _prop(14, "boolean", "Gradient Checkpointing", default=False),
    "hf_repo_id": _prop(15, "string", "Hf Repo Id", "Hugging Face repository ID, if you'd like to upload the "
                        "trained LoRA to Hugging Face. For example, lucataco/flux-dev-lora."),
    "hf_token": _prop(16, "string", "Hf Token", "Hugging Face token, if you'd like to upload the trained LoRA to "
                      "Hugging Face.", format="password", writeOnly=True, **{"x-cog-secret": True}),
    "wandb_api_key": _prop(17, "string", "Wandb Api Key", "Weights and Biases API key, if you'd like to log "
                           "training progress to W&B.", format="password", writeOnly=True,
                           **{"x-cog-secret": True}),
    "wandb_project": _prop(18, "string", "Wandb Project", "Weights and Biases project name.",
                           default="flux_train_replicate"),
    "wandb_run": _prop(19, "string", "Wandb Run", "Weights and Biases run name."),
    "wandb_entity": _prop(20, "string", "Wandb Entity", "Weights and Biases entity name."),
    "wandb_sample_interval": _prop(21, "integer", "Wandb Sample Interval", "Step interval for sampling output "
                                   "images that are logged to W&B.", default=100, minimum=1),
    "wandb_sample_prompts": _prop(22, "string", "Wandb Sample Prompts", "Newline-separated list of prompts to use "
                                  "when logging samples to W&B."),
    "wandb_save_interval": _prop(23, "integer", "Wandb Save Interval", "Step interval for saving intermediate "
                                 "LoRA weights to W&B.", default=100, minimum=1),
    "skip_training_and_use_pretrained_hf_lora_url": _prop(24, "string", "Skip Training And Use Pretrained Hf "
                                                          "Lora Url", "If you’d like to skip LoRA training "
                                                          "altogether, a HuggingFace download URL."),
}  # fmt: skip

_PREDICT_PROPERTIES: dict[str, dict[str, Any]] = {
    "prompt": _prop(0, "string", "Prompt", "Prompt for generated image."),
    "lora_scale": _prop(1, "number", "Lora Scale", default=1, minimum=-1, maximum=3),
    "num_outputs": _prop(2, "integer", "Num Outputs", default=1, minimum=1, maximum=4),
    "seed": _prop(3, "integer", "Seed", "Random seed. Set for reproducible generation"),
}

_STATUS = {"enum": ["starting", "processing", "succeeded", "canceled", "failed"], "type": "string",
           "title": "Status", "description": "An enumeration."}
_WEBHOOK_EVENT = {"enum": ["start", "output", "logs", "completed"], "type": "string", "title": "WebhookEvent",
                  "description": "An enumeration."}


def _document(training: bool) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Input": {"type": "object", "title": "Input", "required": ["prompt"], "properties": _PREDICT_PROPERTIES},
        "Output": {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"},
        "Status": _STATUS,
        "WebhookEvent": _WEBHOOK_EVENT,
    }
    paths: dict[str, Any] = {"/predictions": {"post": {"summary": "Predict",
                                                       "operationId": "predict_predictions_post"}}}
    if training:
        schemas["TrainingInput"] = {"type": "object", "title": "TrainingInput", "properties": _TRAINING_PROPERTIES}
        schemas["TrainingOutput"] = {"type": "object", "title": "TrainingOutput", "required": ["weights"],
                                     "properties": {"weights": {"type": "string", "title": "Weights",
                                                                "format": "uri"}}}
        paths["/trainings"] = {"post": {"summary": "Train", "operationId": "train_trainings_post"}}
    return copy.deepcopy({"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"}, "paths": paths,
                          "components": {"schemas": schemas}})


def trainer_openapi_schema() -> dict[str, Any]:
    """The trainer version's ``openapi_schema`` (prediction and training sides)."""
    return _document(training=True)


def predictor_openapi_schema() -> dict[str, Any]:
    """The ``openapi_schema`` of a version a training created (a LoRA you can run, not train)."""
    return _document(training=False)


def training_defaults() -> dict[str, Any]:
    """Every ``TrainingInput`` default, as ``train()`` sees them when the input omits a field."""
    return {name: prop.get("default") for name, prop in _TRAINING_PROPERTIES.items()}


def invalid_training_fields(value: dict[str, Any]) -> list[dict[str, str]]:
    """What Replicate's validation says about a training ``input`` (empty when it is valid).

    Unknown keys are ignored (Cog drops them); ``None`` means "use the default".
    """
    problems: list[dict[str, str]] = []
    for name, given in value.items():
        prop = _TRAINING_PROPERTIES.get(name)
        if prop is None or given is None:
            continue
        problem = _check(prop, given)
        if problem is not None:
            kind, description = problem
            problems.append({"type": kind, "field": f"input.{name}", "description": description})
    return problems


def _check(prop: dict[str, Any], given: Any) -> tuple[str, str] | None:
    type_ = prop["type"]
    if type_ == "integer" and not (_is_number(given) and float(given).is_integer()):
        return "type", "Invalid type. Expected: integer, given: " + _json_type(given)
    if type_ == "number" and not _is_number(given):
        return "type", "Invalid type. Expected: number, given: " + _json_type(given)
    if type_ == "boolean" and not isinstance(given, bool):
        return "type", "Invalid type. Expected: boolean, given: " + _json_type(given)
    if type_ == "string" and not isinstance(given, str):
        return "type", "Invalid type. Expected: string, given: " + _json_type(given)
    if prop.get("format") == "uri" and not given.startswith(("http://", "https://", "data:")):
        return "format", "Does not match format 'uri'"
    if "minimum" in prop and given < prop["minimum"]:
        return "greater_than_equal", f"Must be greater than or equal to {prop['minimum']}"
    if "maximum" in prop and given > prop["maximum"]:
        return "less_than_equal", f"Must be less than or equal to {prop['maximum']}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), "unknown")

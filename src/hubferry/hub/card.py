"""A model card (README.md) for folders that have none, built with huggingface_hub's ModelCard."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubferry.errors import ValidationError

#: Files in a trained folder that describe the training, read to fill the card.
_ADAPTER_CONFIG = "adapter_config.json"
_TRAINING_ARGS = "training_args.json"
_SECRET_KEYS = ("token", "secret", "password", "api_key", "apikey", "key")
#: Largest training-description file read for the card.
_MAX_JSON = 1024 * 1024


@dataclass
class CardInfo:
    """What is known about a model; empty fields are filled from the folder when possible."""

    title: str | None = None
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    trigger_word: str | None = None
    training_params: dict[str, Any] = field(default_factory=dict)
    #: The licence's name when ``license`` is ``other`` (e.g. ``flux-1-dev-non-commercial-license``).
    license_name: str | None = None
    #: Which usage snippet the card shows: ``diffusers-flux-lora``, or none.
    usage: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when missing, invalid, too big or a link (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(_MAX_JSON + 1)
        data = json.loads(raw.decode("utf-8")) if len(raw) <= _MAX_JSON else None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _public_params(params: dict[str, Any]) -> dict[str, Any]:
    """Training parameters safe to publish: scalar values whose names do not look like credentials."""
    return {
        k: v for k, v in params.items()
        if isinstance(v, (str, int, float, bool)) and not any(s in k.lower() for s in _SECRET_KEYS)
    }


def complete_from_folder(info: CardInfo, folder: Path) -> CardInfo:
    """Fill the blanks of ``info`` from the adapter config and training args found in ``folder``."""
    adapter = _read_json(folder / _ADAPTER_CONFIG)
    args = _read_json(folder / _TRAINING_ARGS)
    base = info.base_model or adapter.get("base_model_name_or_path") or args.get("base_model")
    tags = list(dict.fromkeys([*info.tags, "hubferry", *(["lora", "peft"] if adapter else [])]))
    params = {**_public_params(args), **_public_params(info.training_params)}
    return CardInfo(
        title=info.title, base_model=base if isinstance(base, str) and base else None, license=info.license,
        tags=tags, trigger_word=info.trigger_word or args.get("trigger_word"), training_params=params,
        license_name=info.license_name, usage=info.usage,
    )


def render(info: CardInfo, repo_id: str) -> str:
    """The card's text: YAML metadata the Hub indexes, then a short human description."""
    from huggingface_hub import ModelCard, ModelCardData  # imported here: heavy, and most pushes ship a card

    data = ModelCardData(
        base_model=info.base_model, license=info.license, tags=info.tags or None,
        instance_prompt=info.trigger_word, license_name=info.license_name,
    )
    title = info.title or repo_id.split("/")[-1]
    lines = [f"# {title}", "", f"Published with hubferry to `{repo_id}`.", ""]
    if info.base_model:
        lines += [f"Fine-tuned from `{info.base_model}`.", ""]
    if info.trigger_word:
        lines += ["## Trigger word", "", f"Use `{info.trigger_word}` in your prompt to trigger this model.", ""]
    if info.training_params:
        lines += ["## Training parameters", "", "| parameter | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(info.training_params.items())]
        lines.append("")
    if info.usage == "diffusers-flux-lora":
        prompt = f"a photo of {info.trigger_word}" if info.trigger_word else "a photo"
        lines += [
            "## Use it with diffusers", "", "```python", "import torch",
            "from diffusers import AutoPipelineForText2Image", "",
            f'pipeline = AutoPipelineForText2Image.from_pretrained("{info.base_model}", torch_dtype=torch.bfloat16)',
            'pipeline.to("cuda")',
            f'pipeline.load_lora_weights("{repo_id}", weight_name="lora.safetensors")',
            f"image = pipeline({prompt!r}).images[0]", "```", "",
        ]
    lines += [
        "## Download", "", "```python", "from huggingface_hub import snapshot_download",
        f'path = snapshot_download("{repo_id}")', "```", "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)
    try:
        ModelCard(content)  # parses the metadata block exactly as the Hub's validate-yaml would
    except ValueError as exc:
        raise ValidationError(f"generated model card is invalid: {exc}", hint="check --base-model and tags") from None
    return content

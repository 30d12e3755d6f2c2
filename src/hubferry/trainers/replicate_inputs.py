"""Check a training's inputs against the trainer version's own input schema, before any spend."""

from __future__ import annotations

from typing import Any

from hubferry.errors import ValidationError

#: Inputs hubferry fills itself (the staged dataset) or never sends (secrets would leave the machine).
MANAGED = ("input_images",)
FORBIDDEN = ("hf_token", "hf_repo_id", "wandb_api_key")
_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,), "number": (int, float), "string": (str,), "boolean": (bool,),
}


def coerce(text: str, spec: dict[str, Any]) -> Any:
    """A ``--param key=value`` string as the schema's type says (``3`` → 3, ``true`` → True)."""
    kind = spec.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text  # reported by validate() with the field's name
    if kind == "boolean" and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    return text


def validate(schema: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` checked against ``schema`` (an OpenAPI object schema); returns them unchanged.

    Raises:
        ValidationError: naming the first wrong field and what it accepts.
    """
    properties: dict[str, Any] = schema.get("properties") or {}
    for name, value in inputs.items():
        if name in FORBIDDEN:
            raise ValidationError(
                f"the input {name} is not sent to Replicate by hubferry", field=name,
                hint="hubferry publishes the result itself with your Hub token; drop this input",
            )
        spec = properties.get(name)
        if spec is None:
            known = ", ".join(sorted(k for k in properties if k not in MANAGED + FORBIDDEN))
            raise ValidationError(f"the trainer has no input {name!r}", field=name, hint=f"known inputs: {known}")
        _check(name, value, _resolve(schema, spec))
    missing = [n for n in schema.get("required") or [] if n not in inputs and n not in MANAGED]
    if missing:
        raise ValidationError(f"missing required input {missing[0]}", field=missing[0],
                              hint=f"pass it with --param {missing[0]}=VALUE")
    return inputs


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Follow an ``allOf: [{$ref}]`` (how cog publishes enums) to the referenced schema, merged."""
    for part in spec.get("allOf") or []:
        ref = part.get("$ref", "") if isinstance(part, dict) else ""
        target = ref.rsplit("/", 1)[-1]
        if target and isinstance(schema.get("_components", {}).get(target), dict):
            spec = {**schema["_components"][target], **{k: v for k, v in spec.items() if k != "allOf"}}
    return spec


def _check(name: str, value: Any, spec: dict[str, Any]) -> None:
    kind = spec.get("type")
    accepted = _TYPES.get(str(kind))
    if accepted and (not isinstance(value, accepted) or (kind != "boolean" and isinstance(value, bool))):
        raise ValidationError(f"{name} must be {'an' if kind == 'integer' else 'a'} {kind}, not {value!r}",
                              field=name, hint=spec.get("description", "")[:200])
    low, high = spec.get("minimum"), spec.get("maximum")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else (
                f"at least {low}" if low is not None else f"at most {high}")
            raise ValidationError(f"{name} must be {bounds} (got {value})", field=name,
                                  hint=spec.get("description", "")[:200])
    choices = spec.get("enum")
    if choices and value not in choices:
        raise ValidationError(f"{name} must be one of {', '.join(map(str, choices))} (got {value!r})", field=name)

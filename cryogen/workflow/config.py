"""The workflow's config (config/config.yaml and --config): values read as the schema's types,
JSON-schema validation that fills in defaults, the checks that span keys, and the training budget
as `cryogen train` options. Problems raise CryogenError with the one line Snakemake shows
(workflow/rules/common.smk re-raises it as a WorkflowError)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from ..errors import CryogenError

__all__ = ["budget_options", "check_config", "coerce", "load_schema", "validate"]

Schema = dict[str, Any]

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def load_schema(path: str | Path) -> Schema:
    """A JSON schema written as YAML (workflow/schemas/*.yaml)."""
    return yaml.safe_load(Path(path).read_text())


def coerce(value: Any, schema: Schema) -> Any:
    """`value` with the text that --config gives for nested values read as YAML where the schema
    wants a number, boolean or null (`--config reconstruct='{map_steps: 3}'` gives '3'), so that
    the same setting given either way validates alike and is the same param. Dicts are updated in
    place; text that does not read as a wanted type is left for validation to name."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = coerce(value[key], sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce(v, schema["items"]) for v in value]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and "string" not in types and any(t in _JSON_TYPES for t in types):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        wanted = tuple(_JSON_TYPES[t] for t in types if t in _JSON_TYPES)
        if isinstance(parsed, wanted) and (not isinstance(parsed, bool) or "boolean" in types):
            return parsed
    return value


def _with_defaults(cls: Any) -> Any:
    """`cls` that also fills in each property's default, as snakemake.utils.validate does."""
    validate_properties: Callable[..., Iterator[ValidationError]] = cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Schema, instance: Any, schema: Schema) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def validate(data: dict[str, Any], schema: Schema, what: str) -> None:
    """Check `data` against `schema` and fill in its defaults (in place). The first problem
    raises "WHAT: key a.b: message", naming the offending key."""
    try:
        _Validator(schema).validate(data)
    except ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path)
        key = f"key {where}: " if where else ""
        message = err.message
        if err.validator in ("oneOf", "anyOf") and "description" in err.schema:  # jsonschema's words say nothing here
            message = f"{err.instance!r} is not valid: {err.schema['description']}"
        raise CryogenError(f"{what}: {key}{message}") from None


def check_config(config: dict[str, Any], schema: Schema) -> None:
    """Coerce, validate (filling in defaults) and cross-check the workflow config, in place."""
    coerce(config, schema)
    validate(config, schema, "invalid config")
    chunk, train = config["chunk"], config["train"]
    if not 0 <= chunk["overlap"] <= chunk["tile"] // 2:
        raise CryogenError(
            f"invalid config: key chunk.overlap: {chunk['overlap']} must be between 0 and half of chunk.tile ({chunk['tile']})"
        )
    if train["patch"] > chunk["tile"]:
        raise CryogenError(
            f"invalid config: key train.patch: {train['patch']} is larger than chunk.tile ({chunk['tile']})"
        )
    if train["steps"] is None and train["time_budget"] is None:
        raise CryogenError("invalid config: key train: give steps, time_budget or both (both are null)")


def budget_options(train: dict[str, Any]) -> str:
    """`cryogen train` options for config key train's budget (steps and/or minutes)."""
    opts = []
    if train["steps"] is not None:
        opts.append(f"--steps {train['steps']}")
    if train["time_budget"] is not None:
        opts.append(f"--time-budget {train['time_budget']:g}")
    return " ".join(opts)

"""cryogen.workflow.config: --config values read as the schema's types, validation messages that
name the key, the checks across keys, and the training budget options. Milliseconds: no Snakemake."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cryogen.errors import CryogenError
from cryogen.workflow import budget_options, check_config, coerce, load_schema, validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
DEFAULTS = yaml.safe_load((REPO / "config/config.yaml").read_text())


def config(**sections) -> dict:
    """config/config.yaml with `sections` merged in (a dict updates that section)."""
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def test_shipped_config_is_valid_and_unchanged():
    cfg = config()
    check_config(cfg, SCHEMA)
    assert cfg == DEFAULTS  # every key given: no default to fill in


def test_empty_config_takes_the_schema_defaults():
    cfg: dict = {}
    check_config(cfg, SCHEMA)
    assert cfg["results"] == "results" and cfg["device"] == "auto"
    assert cfg["chunk"] == {"tile": 64, "overlap": 16, "beads": True} and cfg["train"]["steps"] == 1000
    assert cfg["dask"] == {"scheduler_address": None} and cfg["export"]["ome_zarr"] is False


@pytest.mark.parametrize(
    "text, schema, expected",
    [
        ("3", {"type": "integer"}, 3),
        ("2.5", {"type": "number"}, 2.5),
        ("3", {"type": "number"}, 3),
        ("null", {"type": ["integer", "null"]}, None),
        ("true", {"type": "boolean"}, True),
        ("true", {"type": "integer"}, "true"),  # a boolean is not an integer: left for validation
        ("ten", {"type": "integer"}, "ten"),
        ("[1", {"type": "integer"}, "[1"),  # not YAML
        ("3", {"type": "string"}, "3"),
        ("3", {"type": ["string", "null"]}, "3"),
        ("cuda", {"enum": ["auto", "cuda"]}, "cuda"),
    ],
)
def test_coerce_reads_text_as_the_wanted_type(text, schema, expected):
    got = coerce(text, schema)
    assert got == expected and type(got) is type(expected)


def test_coerce_nested_sections_and_lists():
    """What `--config reconstruct='{map_steps: 3}' demo='{shape: [8, 16, 16]}'` passes on."""
    cfg = {"reconstruct": {"map_steps": "3", "prior_weight": "0.5"}, "demo": {"shape": ["8", "16", 16]}, "x": "1"}
    coerce(cfg, SCHEMA)
    assert cfg == {"reconstruct": {"map_steps": 3, "prior_weight": 0.5}, "demo": {"shape": [8, 16, 16]}, "x": "1"}


@pytest.mark.parametrize(
    "sections, message",
    [
        (
            {"chunk": {"tiel": 64}},
            "invalid config: key chunk: Additional properties are not allowed ('tiel' was unexpected)",
        ),
        ({"resutls": "x"}, "invalid config: Additional properties are not allowed ('resutls' was unexpected)"),
        (
            {"reconstruct": {"map_steps": "ten"}},
            "invalid config: key reconstruct.map_steps: 'ten' is not of type 'integer'",
        ),
        ({"train": {"batch": 0}}, "invalid config: key train.batch: 0 is less than the minimum of 1"),
        ({"device": "gpu"}, "invalid config: key device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
        ({"demo": 5}, "invalid config: key demo: 5 is not of type 'object'"),
        (
            {"chunk": {"overlap": 40}},
            "invalid config: key chunk.overlap: 40 must be between 0 and half of chunk.tile (64)",
        ),
        ({"train": {"patch": 128}}, "invalid config: key train.patch: 128 is larger than chunk.tile (64)"),
        ({"train": {"steps": None}}, "invalid config: key train: give steps, time_budget or both (both are null)"),
    ],
    ids=["unknown-key", "unknown-top-key", "wrong-type", "minimum", "enum", "not-object", "overlap", "patch", "budget"],
)
def test_bad_config_raises_one_line_naming_the_key(sections, message):
    with pytest.raises(CryogenError) as exc:
        check_config(config(**sections), SCHEMA)
    assert str(exc.value) == message


def test_text_from_the_command_line_validates_like_yaml():
    cfg = config(reconstruct={"map_steps": "2"}, train={"time_budget": "1.5", "steps": "null"})
    check_config(cfg, SCHEMA)
    assert cfg["reconstruct"]["map_steps"] == 2 and cfg["train"]["steps"] is None and cfg["train"]["time_budget"] == 1.5


def test_one_of_message_uses_the_description():
    schema = {
        "type": "object",
        "properties": {"t": {"oneOf": [{"type": "number"}, {"const": "auto"}], "description": "a tilt or auto"}},
    }
    with pytest.raises(CryogenError, match=r"^row 3: key t: 'x' is not valid: a tilt or auto$"):
        validate({"t": "x"}, schema, "row 3")


@pytest.mark.parametrize(
    "train, options",
    [
        ({"steps": 1000, "time_budget": None}, "--steps 1000"),
        ({"steps": None, "time_budget": 30.0}, "--time-budget 30"),
        ({"steps": 5, "time_budget": 0.5}, "--steps 5 --time-budget 0.5"),
    ],
)
def test_budget_options(train, options):
    assert budget_options(train) == options

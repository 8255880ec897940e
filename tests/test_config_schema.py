"""The exported JSON Schema of the config agrees with the loader (`medstream validate`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.cli import main as medstream
from stream.config import GrabSpec, load_config
from stream.config_schema import DOC_FILE, config_schema
from stream.spec import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DEMO = yaml.safe_load((ROOT / "configs" / "ultrasound_seg.yaml").read_text())


@pytest.fixture(scope="module")
def validator() -> Any:
    """A draft 2020-12 validator of the exported schema (tests using it skip without jsonschema)."""
    jsonschema = pytest.importorskip("jsonschema", reason="pip install 'medstream[test]'")
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def dotted(path: Any) -> str:
    """A jsonschema error path written as the loader writes keys: `stages[2].sinks[0].port`."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def schema_errors(validator: Any, data: Any) -> list[str]:
    """Each top-level error as `dotted.path: message`."""
    return [f"{dotted(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def schema_names(validator: Any, data: Any, key: str) -> bool:
    """Whether some error (or, under a oneOf, some variant's error) is at `key`, or at the
    mapping holding it and names it (`'bugdet_ms' was unexpected`, `'id' is a required ...`)."""
    parent, _, last = key.rpartition(".")
    if "[" in last:  # stages[1]: the parent is stages
        parent, last = key.rsplit("[", 1)[0], ""
    todo = list(validator.iter_errors(data))
    while todo:
        e = todo.pop()
        where = dotted(e.absolute_path)
        if where == key or (where == parent and last and repr(last) in e.message):
            return True
        todo.extend(e.context or ())
    return False


@pytest.mark.parametrize("roi", ["auto", [0, 0, 100, 80], [[0, 0], [90, 0], [45, 60]]])
def test_schema_and_loader_accept_each_roi_shape(validator: Any, roi: Any) -> None:
    data = broken(["stages", 0, "roi"], roi)
    grab = load_config(copy.deepcopy(data)).stage("grab")
    assert isinstance(grab, GrabSpec) and grab.roi == roi
    assert schema_errors(validator, data) == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_bundled_configs_validate_against_the_schema(validator: Any, path: Path) -> None:
    assert schema_errors(validator, yaml.safe_load(path.read_text())) == []


def test_committed_schema_is_the_exported_one() -> None:
    assert json.loads(DOC_FILE.read_text()) == config_schema(), "run: python -m tools.config_reference"


def test_cli_writes_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schema.json"
    assert medstream(["config-schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == config_schema()
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert medstream(["config-schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()
    assert medstream(["config-schema", "--out", str(tmp_path / "no" / "dir.json")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_schema_carries_types_bounds_defaults_and_docs() -> None:
    schema = config_schema()
    budget = schema["properties"]["budget_ms"]
    assert budget["type"] == "number" and budget["minimum"] == 0.1 and budget["default"] == 50.0
    assert budget["description"]
    link = schema["$defs"]["link"]
    assert link["properties"]["mode"]["enum"] == ["live", "lossless"]
    assert link["additionalProperties"] is False
    grab = schema["$defs"]["stage-grab"]
    assert grab["required"] == ["kind", "id", "source"]
    variants = grab["properties"]["source"]["oneOf"]
    assert {"$ref": "#/$defs/source-dicom"} in variants
    assert schema["$defs"]["source-dicom"]["properties"]["type"]["const"] == "dicom"
    assert schema["$defs"]["sink-video"]["required"] == ["type", "path"]


def broken(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(DEMO)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


# (where the config is broken, the value put there, the key both checks must name)
INVALID = [
    (["bugdet_ms"], 5, "bugdet_ms"),
    (["budget_ms"], -5, "budget_ms"),
    (["budget_ms"], "fast", "budget_ms"),
    (["links", "frames", "mode"], "fast", "links.frames.mode"),
    (["restart"], {"max_restarts": 1001}, "restart.max_restarts"),
    (["stages", 0, "fps"], 0, "stages[0].fps"),
    (["stages", 0, "source", "width"], "wide", "stages[0].source.width"),
    (["stages", 0, "source", "colour"], "red", "stages[0].source"),
    (["stages", 1, "engine", "backend"], "tpu", "stages[1].engine.backend"),
    (["stages", 1, "engine", "threads"], 0, "stages[1].engine.threads"),
    (["stages", 1, "id"], KeyError, "stages[1].id"),
    (["stages", 1, "id"], "in fer", "stages[1].id"),
    (["stages", 0, "roi"], "somewhere", "stages[0].roi"),
    (["stages", 0, "roi"], [0, 0, 10], "stages[0].roi"),
    (["stages", 0, "roi"], [[0, 0], [5, 5]], "stages[0].roi"),
    (["stages", 2, "overlay"], "heat", "stages[2].overlay"),
    (["stages", 2, "sinks", 0, "port"], 1.5, "stages[2].sinks[0].port"),
    (["links"], KeyError, "links"),
]


@pytest.mark.parametrize("path, value, key", INVALID, ids=[k for _, _, k in INVALID])
def test_invalid_configs_are_refused_by_both(
    validator: Any, path: list[Any], value: Any, key: str
) -> None:
    data = broken(path, value)
    with pytest.raises(ConfigError) as err:
        load_config(copy.deepcopy(data))
    assert str(err.value).startswith(key), err.value
    errors = schema_errors(validator, data)
    assert errors, f"the schema accepts what the loader refuses: {err.value}"
    assert schema_names(validator, data, key), errors


def test_validate_command_and_schema_name_the_same_key(
    validator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = broken(["links", "frames", "pattern"], "broadcast")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert medstream(["validate", str(bad)]) == 2
    assert "config error: links.frames.pattern: expected one of" in capsys.readouterr().err
    assert schema_errors(validator, data) == [
        "links.frames.pattern: 'broadcast' is not one of ['pubsub', 'pushpull']"
    ]

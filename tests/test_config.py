"""Config errors name the key and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from stream.config import consumer_notes, load_config, load_config_file
from stream.spec import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEMO = yaml.safe_load((ROOT / "configs" / "ultrasound_seg.yaml").read_text())


def test_bundled_configs_load() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config_file(path)
        assert cfg.stages, path


def test_demo_expands_run_dir() -> None:
    cfg = load_config(copy.deepcopy(DEMO))
    assert cfg.run_dir == "runs/ultrasound-seg"
    assert cfg.link("frames").endpoint == "ipc://runs/ultrasound-seg/frames.ipc"


def test_an_empty_section_means_its_defaults() -> None:
    data = copy.deepcopy(DEMO)
    data["security"] = None  # `security:` with nothing under it
    data["stages"][1]["engine"]["threads"] = 2
    data["stages"][1]["batch"] = None
    cfg = load_config(data)
    assert cfg.security == load_config(copy.deepcopy(DEMO)).security
    infer = cfg.stage(data["stages"][1]["id"])
    assert infer.batch.max_batch == 1 and infer.engine.threads == 2  # type: ignore[union-attr]


def broken(path: list, value) -> dict:
    data = copy.deepcopy(DEMO)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        (["budget_ms"], "fast", "budget_ms: expected a number"),
        (["budget_ms"], -5, "budget_ms: expected a value in [0.1"),
        (["bugdet_ms"], 5, "bugdet_ms: unknown top-level key; allowed keys: budget_ms"),
        (["links", "frames", "mode"], "fast", "links.frames.mode: expected one of 'live', 'lossless'"),
        (["links", "frames", "endpoint"], "udp://x", "links.frames.endpoint: expected tcp://"),
        (["stages", 0, "kind"], "grabber", "stages[0].kind: expected one of grab, infer, render"),
        (["stages", 0, "fps"], 0, "stages[0].fps: expected a value in [0.1"),
        (["stages", 0, "source", "type"], "camera9", "stages[0].source.type: unknown source type 'camera9'"),
        (["stages", 0, "source", "width"], "wide", "stages[0].source.width: expected an integer"),
        (["stages", 0, "source", "width"], True, "stages[0].source.width: expected an integer, got True"),
        (["stages", 0, "fps"], "x", "stages[0].fps: expected a number, got 'x'"),
        (["stages", 1, "engine", "bogus"], 1, "stages[1].engine: unknown key 'bogus'; allowed keys: backend"),
        (["stages", 2, "layout"], {"type": "grud"}, "stages[2].layout.type: expected one of 'grid', "),
        (["stages", 2, "per_stream_sinks"], {"a": [], "b": "x"}, "stages[2].per_stream_sinks.b: expected a list, got 'x'"),
        (["stages", 1, "input"], "nowhere", "stages[1].input: unknown link 'nowhere'"),
        (["stages", 1, "engine", "backend"], "tpu", "stages[1].engine.backend: expected one of 'auto'"),
        (["stages", 1, "engine", "threads"], 0, "stages[1].engine.threads"),
        (["stages", 2, "mode"], "sometimes", "stages[2].mode: expected one of"),
        (["stages", 2, "sinks", 0, "type"], "hologram", "stages[2].sinks[0].type: unknown sink type 'hologram'"),
        (["stages", 2, "sinks", 1, "fps"], "x", "stages[2].sinks[1].fps"),
        (["stages", 1, "id"], "grab", "stages[1].id: 'grab' is used twice"),
        (["stages", 1, "id"], KeyError, "stages[1].id: required"),
        (["links"], KeyError, "links: expected a mapping"),
    ],
)
def test_errors_name_the_key(path: list, value, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(broken(path, value))
    assert message in str(err.value)


def test_passthrough_needs_video_link() -> None:
    data = broken(["stages", 2, "mode"], "passthrough")
    with pytest.raises(ConfigError, match=r"stages\[2\].video: required"):
        load_config(data)
    data["stages"][2]["video"] = "frames"
    assert load_config(data).stage("render").video == "frames"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlinks: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config_file(tmp_path / "missing.yaml")


def test_sources_and_sinks_are_typed_once_at_load(monkeypatch) -> None:
    import stream.plugins as plugins
    from stream.config import GrabSpec, RenderSpec
    from stream.preflight import preflight
    from stream.sources.phantom import PhantomSpec

    parsed: list[str] = []
    real = plugins.parse_typed

    def counting(registry, raw, where, what):  # type: ignore[no-untyped-def]
        parsed.append(where)
        return real(registry, raw, where, what)

    monkeypatch.setattr(plugins, "parse_typed", counting)
    cfg = load_config(copy.deepcopy(DEMO))
    sections = ["stages[0].source"] + [f"stages[2].sinks[{i}]" for i in range(len(DEMO["stages"][2]["sinks"]))]
    assert parsed == sections
    grab, render = cfg.stages[0], cfg.stages[2]
    assert isinstance(grab, GrabSpec) and isinstance(render, RenderSpec)
    preflight(cfg, [grab.id], supervisor=False)
    source = grab.typed_source(grab.id)
    sinks, per_stream = render.typed_sinks(render.id)
    assert parsed == sections  # preflight and the stages opening them parse nothing again
    assert source.type == DEMO["stages"][0]["source"]["type"] and isinstance(source.spec, PhantomSpec)
    assert [s.type for s in sinks] == [raw["type"] for raw in DEMO["stages"][2]["sinks"]]
    assert per_stream == {}


def _infer(stage_id: str, src: str, dst: str) -> dict:
    return {"id": stage_id, "kind": "infer", "input": src, "output": dst, "engine": {"model": "us-seg"}}


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "stages[1] (infer): its output 'results' leads back to its input 'results'"),
        # two stages passing frames back and forth: both links also fed from outside
        ([_infer("back", "results", "frames")], "(infer): its output 'results' leads back to its input 'frames'"),
    ],
)
def test_a_loop_of_infer_stages_is_refused(extra: list, message: str) -> None:
    data = copy.deepcopy(DEMO)
    if not extra:
        data["stages"][1]["input"] = "results"  # infer reads what it writes
    data["stages"] += extra
    data["links"]["frames"]["bind"] = "consumer" if extra else "producer"  # two producers fan in
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert message in str(err.value)


def test_a_chain_of_infer_stages_is_not_a_loop() -> None:
    data = copy.deepcopy(DEMO)
    data["links"]["more"] = {"endpoint": "ipc://{run_dir}/more.ipc"}
    data["stages"][2]["input"] = "more"
    data["stages"].append(_infer("second", "results", "more"))
    assert [s.id for s in load_config(data).stages] == ["grab", "infer", "render", "second"]


def test_consumer_notes_name_a_stage_that_would_wait_for_nobody() -> None:
    assert consumer_notes(load_config(copy.deepcopy(DEMO))) == []
    data = copy.deepcopy(DEMO)
    data["stages"][2]["input"] = "frames"  # nothing of this config reads infer's results
    notes = consumer_notes(load_config(data))
    assert notes == [
        "infer waits up to 20 s for 1 consumer(s) on link 'results', which no stage of this "
        "config reads: an outside consumer is expected, or set wait_for_consumers: 0 to start "
        "at once"
    ]
    data["stages"][1]["wait_for_consumers"] = 0
    assert consumer_notes(load_config(data)) == []
    data = copy.deepcopy(DEMO)
    data["stages"][0]["wait_for_consumers"] = 2
    data["stages"][0]["wait_timeout_s"] = 3
    assert consumer_notes(load_config(data)) == [
        "grab waits up to 3 s for 2 consumer(s) on link 'frames', which only 1 stage(s) of "
        "this config read: an outside consumer is expected, or set wait_for_consumers: 1 to "
        "start at once"
    ]


def test_aliases_load_but_a_yaml_bomb_is_refused(tmp_path: Path) -> None:
    """Nine levels of nine nested aliases in `roi:` made `validate` run for ever (387 million
    values to walk); a config's values number in the hundreds."""
    text = (ROOT / "configs" / "ultrasound_seg.yaml").read_text()
    shared = text.replace("  frames:                # grab", "  frames: &link             # grab")
    shared = shared.replace(
        "  results:               # infer -> render: frames with their mask\n"
        "    endpoint: ipc://{run_dir}/results.ipc\n"
        "    pattern: pubsub\n"
        "    mode: live\n",
        "  results: {<<: *link, endpoint: 'ipc://{run_dir}/results.ipc'}\n",
    )
    assert "<<: *link" in shared
    (tmp_path / "aliases.yaml").write_text(shared)
    cfg = load_config_file(tmp_path / "aliases.yaml")  # a merge key and an alias: fine
    assert cfg.link("results").mode == "live" and cfg.link("results").endpoint.endswith("results.ipc")
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = text.replace("    fps: 30\n", f"    fps: 30\n    roi: [{', '.join(levels)}]\n", 1)
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match=r"bomb.yaml: more than 100,000 values once its YAML"):
        load_config_file(tmp_path / "bomb.yaml")

"""Pipeline configs: YAML, validated at load with errors that name the key and what was expected."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from engines.api import EngineSpec

from .bundled_configs import resolve_config
from .endpoints import check_endpoint
from .plugins import Typed, parse_sink, parse_source
from .security import SecuritySpec, check_security
from .spec import ConfigError, bounded, parse_spec, required, section
from .tracking import TrackerSpec
from .transport import LinkSpec


@dataclass
class RestartSpec:
    """How the supervisor treats a stage that exits unexpectedly."""

    max_restarts: int = bounded(5, 0, 1000, doc="restarts allowed per stage before the run fails")
    backoff_s: float = bounded(0.2, 0.0, 60.0, doc="first restart delay; doubles each time")
    backoff_max_s: float = bounded(5.0, 0.0, 600.0, doc="longest restart delay")


@dataclass
class GrabSpec:
    """A source stage: reads frames and publishes them at a set rate."""

    id: str = required("unique stage id: names its logs, metrics, trace lane")
    output: str = bounded("", doc="link the frames go out on")
    source: dict[str, Any] = section(dict, "the source: `type:` plus that type's keys (below)")
    kind: Literal["grab"] = bounded("grab", doc="stage kind")
    fps: float | None = bounded(None, 0.1, 1000.0, doc="pacing; null: the source's own rate")
    frames: int = bounded(0, 0, 10**12, doc="stop after this many frames (0: run until stopped)")
    stream: str = bounded("", doc="stream id on the wire (default: the stage id)")
    budget_ms: float | None = bounded(
        None, 0.1, 600000.0, doc="this stream's capture -> rendered budget (null: the pipeline's)"
    )
    wait_for_consumers: int = bounded(1, 0, 1000, doc="subscribers to wait for before capturing")
    wait_timeout_s: float = bounded(20.0, 0.0, 3600.0, doc="how long to wait for them")
    roi: str | list[Any] = bounded(
        "default",
        doc="imaging region put in each frame's meta: default (DICOM regions if the file has "
        "them, else auto), auto, dicom, none, [x0, y0, x1, y1] or [[x, y], ...]",
    )
    # `source` parsed once (at load, or at first use for a spec built in code)
    typed: Typed | None = dataclasses.field(default=None, init=False, repr=False)

    def typed_source(self, where: str) -> Typed:
        """`source` as its typed spec; `where` names it in errors on the first (only) parse."""
        if self.typed is None:
            self.typed = parse_source(self.source, f"{where}.source")
        return self.typed

    def validate(self, where: str) -> None:
        from .roi.setting import parse_roi_setting

        parse_roi_setting(self.roi, f"{where}.roi" if where else "roi")
        self.typed_source(where)


@dataclass
class BatchSpec:
    """Batching frames of several streams into one model call (infer stage)."""

    max_batch: int = bounded(
        1, 1, 64, doc="frames per model call, at most one per stream (1: no batching)"
    )
    max_wait_ms: float = bounded(
        5.0, 0.0, 1000.0,
        doc="longest a batch waits for more frames after its first; never past the point "
        "where its most urgent frame would miss its deadline",
    )


@dataclass
class InferSpec:
    """An inference stage: preprocess -> engine -> postprocess -> annotations."""

    id: str = required("unique stage id")
    input: str = bounded("", doc="link frames come in on")
    output: str = bounded("", doc="link annotated frames go out on")
    kind: Literal["infer"] = bounded("infer", doc="stage kind")
    engine: EngineSpec = section(EngineSpec, "the model and backend (see `engine:`)")
    predict_drops: bool = bounded(
        True, doc="drop frames this stage would finish after their deadline"
    )
    stage_budget_ms: float | None = bounded(
        None, 0.1, 60000.0, doc="per-stage budget (overruns counted)"
    )
    wait_for_consumers: int = bounded(
        1, 0, 1000, doc="subscribers to wait for before subscribing upstream"
    )
    wait_timeout_s: float = bounded(20.0, 0.0, 3600.0, doc="how long to wait for them")
    run_every: int = bounded(
        1, 1, 1000, doc="run the model on every Nth frame; the others reuse the last result"
    )
    auto_skip: bool = bounded(
        False, doc="reuse the last result for a frame the model would finish too late"
    )
    max_reuse_age_ms: float = bounded(
        200.0, 0.0, 60000.0, doc="oldest result reused (capture to capture); older: run or drop"
    )
    fallback: EngineSpec | None = bounded(
        None, doc="cascade: a lighter `engine:` used while the main model misses the budget"
    )
    fallback_after: int = bounded(3, 1, 1000, doc="budget misses in a row before the fallback")
    probe_every: int = bounded(
        30, 1, 100000, doc="on the fallback, try the main model every N frames"
    )
    batch: BatchSpec = section(
        BatchSpec, "frames of several streams run as one batch (see `batch:`)"
    )
    tracker: TrackerSpec | None = bounded(
        None, doc="assign track ids to the model's boxes across frames (see `tracker:`)"
    )
    confidence_part: Literal["auto", "always"] = bounded(
        "auto",
        doc="the mask's per-pixel `confidence` part: auto = sent while a reader of `output` may "
        "draw it (a render stage with overlay confidence or both, any other stage, or a reader "
        "not in this config); always = every frame (a foreign reader beside a labels-only render)",
    )


Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


@dataclass
class LayoutSpec:
    """Several streams composed into one image (stream.render.compositor)."""

    type: Literal["grid", "side_by_side", "pip"] = bounded(
        "grid", doc="grid, side_by_side (one row) or pip (the first stream full size, insets)"
    )
    max_skew_ms: float = bounded(
        100.0,
        0.0,
        60000.0,
        doc="a tile captured more than this before the newest tile is marked STALE",
    )
    pip_scale: float = bounded(0.3, 0.05, 0.5, doc="pip: inset size, a fraction of the main tile")
    titles: bool = bounded(True, doc="title each tile with its stream id")
    streams: list[str] = section(
        list, "tile order by stream id (others follow as they first arrive); [] for arrival order"
    )


OrientationPlace = Literal["edges", "top-left", "top-right", "bottom-left", "bottom-right"]


@dataclass
class RenderSpec:
    """A render stage: overlay + HUD, then the sinks."""

    id: str = required("unique stage id")
    input: str = bounded("", doc="link annotated frames come in on")
    inputs: list[str] = section(
        list, "several links in (synchronized mode), each carrying one or more streams"
    )
    kind: Literal["render"] = bounded("render", doc="stage kind")
    mode: Literal["synchronized", "passthrough"] = bounded(
        "synchronized",
        doc="synchronized: each frame with its own overlay; passthrough: raw video "
        "at full rate with the newest overlay while it is young enough",
    )
    video: str = bounded("", doc="passthrough: link carrying the raw frames")
    overlay_max_age_ms: float = bounded(
        100.0, 0.0, 60000.0, doc="passthrough: oldest overlay drawn"
    )
    hud: bool = bounded(True, doc="draw the HUD")
    hud_corner: Corner = bounded("top-left", doc="corner of the HUD panel")
    scale_bar: bool = bounded(True, doc="draw a scale bar in mm where the frame has a spacing")
    scale_bar_corner: Corner = bounded("bottom-right", doc="corner of the scale bar")
    orientation: bool = bounded(True, doc="draw patient directions where the frame has them")
    orientation_corner: OrientationPlace = bounded(
        "edges", doc="edges: a letter at each edge; a corner: a compact arrow glyph there"
    )
    show: Literal["auto", "input", "output", "side_by_side"] = bounded(
        "auto",
        doc="auto: the model's output image where there is one (a denoiser's), else the "
        "input; side_by_side: input (with overlay) | output",
    )
    overlay: Literal["labels", "confidence", "both"] = bounded(
        "labels",
        doc="model output drawn: labels (class colours), confidence (heat-map of the model's "
        "per-pixel confidence, low = hot), or both",
    )
    sinks: list[dict[str, Any]] = section(list, "where rendered frames go: `type:` plus its keys")
    layout: None | LayoutSpec = bounded(  # None first: `layout: null` stays None
        None,
        doc="several streams: compose the newest frame of each into one image for the sinks "
        "(null: each stream's frames go to the sinks as they are, tagged with their stream)",
    )
    per_stream_sinks: dict[str, list[dict[str, Any]]] = section(
        dict, "stream id -> its own sinks (that stream's frames, not composed), besides `sinks`"
    )
    stage_budget_ms: float | None = bounded(
        None, 0.1, 60000.0, doc="per-stage budget (overruns counted)"
    )
    trail_length: int = bounded(
        12, 0, 256, doc="tracked boxes: centres kept per track id for its trail (0: no trails)"
    )
    tips: bool = bounded(True, doc="tracked boxes: mark each box's centre (a tool-tip marker)")
    # `sinks` and `per_stream_sinks` parsed once (at load, or at first use for a spec built in code)
    typed: tuple[list[Typed], dict[str, list[Typed]]] | None = dataclasses.field(
        default=None, init=False, repr=False
    )

    def typed_sinks(self, where: str) -> tuple[list[Typed], dict[str, list[Typed]]]:
        """`sinks` and `per_stream_sinks` as typed specs; `where` names them in errors."""

        def typed(raws: list[dict[str, Any]], key: str) -> list[Typed]:
            return [parse_sink(raw, f"{where}.{key}[{i}]") for i, raw in enumerate(raws)]

        if self.typed is None:
            streams = self.per_stream_sinks.items()
            per_stream = {s: typed(raws, f"per_stream_sinks.{s}") for s, raws in streams}
            self.typed = (typed(self.sinks, "sinks"), per_stream)
        return self.typed

    def input_links(self) -> list[str]:
        """The links whose frames are drawn: `inputs`, else `input` (passthrough: `video`)."""
        if self.inputs:
            return list(self.inputs)
        return [self.video if self.mode == "passthrough" else self.input]

    def validate(self, where: str) -> None:
        if self.inputs and self.input:
            raise ConfigError(f"{where}.inputs: give either input or inputs, not both")
        if self.inputs and self.mode == "passthrough":
            raise ConfigError(f"{where}.inputs: only in synchronized mode (passthrough: video)")
        if len(set(self.inputs)) != len(self.inputs):
            raise ConfigError(f"{where}.inputs: a link is named twice in {self.inputs}")
        for i, sink in enumerate(self.typed_sinks(where)[0]):
            if self.layout is not None and sink.type == "recorder":
                raise ConfigError(
                    f"{where}.sinks[{i}]: a recorder keeps each stream's original frames, not a "
                    "composed image: put it in per_stream_sinks.<stream>"
                )
        if self.layout is not None and self.layout.type == "pip" and len(self.layout.streams) > 4:
            raise ConfigError(f"{where}.layout.streams: pip shows at most 4 streams")
        pieces = {"hud": self.hud, "scale_bar": self.scale_bar, "orientation": self.orientation}
        taken: dict[str, str] = {}
        for name, on in pieces.items():
            corner = getattr(self, f"{name}_corner")
            if not on or corner == "edges":
                continue
            if corner in taken:
                raise ConfigError(
                    f"{where}.{name}_corner: {taken[corner]} is in the {corner} corner already; "
                    "give each piece its own corner (or switch one off)"
                )
            taken[corner] = name


StageSpec = GrabSpec | InferSpec | RenderSpec
STAGE_KINDS: dict[str, type] = {"grab": GrabSpec, "infer": InferSpec, "render": RenderSpec}


@dataclass
class PipelineConfig:
    """A whole graph: links, stages, the latency budget."""

    name: str = bounded("pipeline", doc="pipeline name (reports, {name} in paths)")
    budget_ms: float = bounded(50.0, 0.1, 600000.0, doc="capture -> rendered, per frame")
    run_dir: str = bounded("runs/{name}", doc="folder for ipc sockets and logs ({name} expands)")
    stats_endpoint: str = bounded("ipc://{run_dir}/stats.ipc", doc="where stages push their stats")
    stats_pub: str = bounded(
        "ipc://{run_dir}/stats_pub.ipc",
        doc="where the supervisor re-publishes all stages' stats for tools (top, profile, "
        "prometheus); '' for none",
    )
    frame_log: str = bounded(
        "ipc://{run_dir}/frame_log.ipc",
        doc="where stages send per-frame records while a profiler listens there (nothing is "
        "encoded while none does); '' for never",
    )
    restart: RestartSpec = section(RestartSpec, "what the supervisor does when a stage crashes")
    security: SecuritySpec = section(SecuritySpec, "CURVE keys, allow-lists, insecure opt-in")
    links: dict[str, LinkSpec] = section(dict, "link name -> link (below)")
    stages: list[Any] = section(list, "the stages (grab, infer, render)")
    # set by the loader, never by a user's config (not init fields: parse_spec refuses them)
    source_file: str = dataclasses.field(default="", init=False)
    document: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def stage(self, stage_id: str) -> StageSpec:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise ConfigError(
            f"stages: no stage with id {stage_id!r}; ids: {', '.join(s.id for s in self.stages)}"
        )

    def link(self, name: str) -> LinkSpec:
        return self.links[name]

    def readers(self, link: str) -> list[StageSpec]:
        """The stages that take frames from `link` (render: drawn or, passthrough, overlays)."""
        def reads(s: StageSpec) -> list[str]:
            if isinstance(s, RenderSpec):
                return [*s.input_links(), s.input]
            return [s.input] if isinstance(s, InferSpec) else []

        return [s for s in self.stages if link in reads(s)]

    def streams_into(self, link: str) -> list[str]:
        """The ids of the streams the grab stages upstream of `link` send into it (empty when
        its producers are not in this config: a foreign one)."""
        out: list[str] = []
        for s in self.stages:
            if getattr(s, "output", None) != link:
                continue
            if isinstance(s, GrabSpec):
                out.append(s.stream or s.id)
            elif isinstance(s, InferSpec) and s.input != link:
                out += [x for x in self.streams_into(s.input) if x not in out]
        return out


def _expand(text: str, values: dict[str, str], where: str) -> str:
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"{where}: cannot expand {text!r}: only {{name}} and {{run_dir}} are known ({e})"
        ) from None


def _parse_stage(raw: Any, where: str) -> StageSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'id' and 'kind', got {raw!r:.60}")
    kind = raw.get("kind")
    if kind not in STAGE_KINDS:
        raise ConfigError(f"{where}.kind: expected one of {', '.join(STAGE_KINDS)}, got {kind!r}")
    spec: StageSpec = parse_spec(STAGE_KINDS[kind], raw, where)
    if not spec.id or not all(c.isalnum() or c in "-_." for c in spec.id):
        raise ConfigError(f"{where}.id: expected letters, digits, '-', '_' or '.', got {spec.id!r}")
    return spec


def _check_links(cfg: PipelineConfig) -> None:
    producers: dict[str, list[str]] = {}
    used: set[str] = set()
    known = ", ".join(cfg.links) or "none"
    for i, s in enumerate(cfg.stages):
        where = f"stages[{i}]"
        ins = [("input", s.input)] if not isinstance(s, GrabSpec) else []
        if isinstance(s, RenderSpec) and s.inputs:
            ins = [(f"inputs[{j}]", name) for j, name in enumerate(s.inputs)]
        if isinstance(s, RenderSpec) and s.mode == "passthrough":
            if not s.video:
                raise ConfigError(
                    f"{where}.video: required in passthrough mode (the raw frames link)"
                )
            ins.append(("video", s.video))
        outs = [("output", s.output)] if not isinstance(s, RenderSpec) else []
        for key, name in ins + outs:
            if not name:
                raise ConfigError(f"{where}.{key}: required (a link name; links: {known})")
            if name not in cfg.links:
                raise ConfigError(f"{where}.{key}: unknown link {name!r}; links: {known}")
        for _, name in outs:
            producers.setdefault(name, []).append(s.id)
        used.update(name for _, name in ins + outs)
    for name, ids in producers.items():
        if len(ids) > 1 and cfg.links[name].bind == "producer":
            raise ConfigError(
                f"links.{name}: stages {', '.join(ids)} all bind it; set bind: consumer to fan in"
            )
    for name in cfg.links:
        if name not in used:
            raise ConfigError(
                f"links.{name}: no stage uses this link (as input, output or video); "
                "remove it or name it in a stage"
            )


def _check_loops(cfg: PipelineConfig) -> None:
    """An infer stage whose output leads back to its own input would pass frames round forever
    (or, fed by nothing else, never get a first one)."""
    outputs: dict[str, set[str]] = {}
    for s in cfg.stages:
        if isinstance(s, InferSpec):
            outputs.setdefault(s.input, set()).add(s.output)
    for i, s in enumerate(cfg.stages):
        if not isinstance(s, InferSpec):
            continue
        reached, todo = set(), [s.output]
        while todo:
            link = todo.pop()
            if link not in reached:
                reached.add(link)
                todo += outputs.get(link, ())
        if s.input in reached:
            raise ConfigError(
                f"stages[{i}] ({s.id}): its output {s.output!r} leads back to its input "
                f"{s.input!r} (a loop: frames would go round, or never arrive)"
            )


def consumer_notes(cfg: PipelineConfig) -> list[str]:
    """Stages that will wait for more consumers than the stages of this config that read their
    output (an outside consumer may be meant; else the stage waits `wait_timeout_s` for nobody)."""
    notes = []
    for s in cfg.stages:
        wanted = getattr(s, "wait_for_consumers", 0)
        if not wanted or cfg.links[s.output].pattern != "pubsub":
            continue
        readers = len(cfg.readers(s.output))
        if readers < wanted:
            read_by = (
                f"only {readers} stage(s) of this config read"
                if readers
                else "no stage of this config reads"
            )
            notes.append(
                f"{s.id} waits up to {s.wait_timeout_s:g} s for {wanted} consumer(s) on link "
                f"{s.output!r}, which {read_by}: an outside consumer is expected, or set "
                f"wait_for_consumers: {readers} to start at once"
            )
    return notes


def _check_endpoints(cfg: PipelineConfig) -> None:
    """Endpoint syntax and ipc path length, after {run_dir} expansion."""
    for name, link in cfg.links.items():
        check_endpoint(link.endpoint, f"links.{name}.endpoint")
    for key in ("stats_endpoint", "stats_pub", "frame_log"):
        value = getattr(cfg, key)
        if value or key == "stats_endpoint":
            check_endpoint(value, key)


def load_config(data: Any, source_file: str = "") -> PipelineConfig:
    """Validate a parsed YAML document into a PipelineConfig."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source_file or 'config'}: expected a mapping at the top level")
    stages_raw = data.get("stages", [])
    cfg = parse_spec(PipelineConfig, {k: v for k, v in data.items() if k != "stages"}, "")
    cfg.source_file = source_file
    cfg.document = copy.deepcopy(data)
    values = {"name": cfg.name}
    cfg.run_dir = _expand(cfg.run_dir, values, "run_dir")
    values["run_dir"] = cfg.run_dir
    for key in ("stats_endpoint", "stats_pub", "frame_log"):
        setattr(cfg, key, _expand(getattr(cfg, key), values, key))
    if not cfg.links:
        raise ConfigError("links: expected a mapping of link name -> {endpoint, pattern, mode}")
    for name, link in cfg.links.items():
        link.endpoint = _expand(link.endpoint, values, f"links.{name}.endpoint")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError("stages: expected a list of stages (grab, infer, render)")
    cfg.stages = [_parse_stage(raw, f"stages[{i}]") for i, raw in enumerate(stages_raw)]
    seen: set[str] = set()
    for i, s in enumerate(cfg.stages):
        if s.id in seen:
            raise ConfigError(f"stages[{i}].id: {s.id!r} is used twice; stage ids must be unique")
        seen.add(s.id)
    _check_links(cfg)
    _check_loops(cfg)
    _check_endpoints(cfg)
    check_security(cfg)
    return cfg


def load_config_file(path: str | Path) -> PipelineConfig:
    path = resolve_config(path)  # `configs/NAME.yaml` missing here: the bundled one
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError:  # a video, a recording, a model given where a config goes
        raise ConfigError(f"{path}: not a text file (a pipeline config is YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{at}: not valid YAML: {getattr(e, 'problem', e)}") from None
    _check_expanded_size(data, path)
    if isinstance(data, dict) and FROZEN_KEY in data:  # a run's frozen copy (stream.frozen_config)
        return load_frozen_document(data, path)
    return load_config(data, str(path))


FROZEN_KEY = "medstream_frozen_config"
MAX_CONFIG_VALUES = 100_000  # a pipeline config holds hundreds


def _check_expanded_size(data: Any, path: Path) -> None:
    """Refuse a document whose YAML aliases expand it past MAX_CONFIG_VALUES values (nested
    aliases grow it exponentially: nine levels of nine made `validate` run for ever)."""
    todo, seen = [data], 0
    while todo:
        node = todo.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{path}: more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are "
                "expanded (aliases nested in aliases?)"
            )
        if isinstance(node, dict):
            todo += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            todo += node


def load_frozen_document(data: dict[str, Any], path: Path) -> PipelineConfig:
    """The config inside a frozen copy, validated again, naming the user's file as its source."""
    meta, document = data.get(FROZEN_KEY), data.get("config")
    only_those = set(data) == {FROZEN_KEY, "config"}
    if not isinstance(meta, dict) or not isinstance(document, dict) or not only_those:
        raise ConfigError(f"{path}: not a frozen config (expected {FROZEN_KEY} and config)")
    return load_config(document, str(meta.get("source_file", path)))

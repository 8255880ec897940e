"""`medstream engine build|info`: TensorRT engines ahead of time, and what the cache holds.

    medstream engine build us-seg --precision fp16      # or a path: MODEL.onnx
    medstream engine info                               # TensorRT, GPU, cached engines
    medstream engine info us-seg --precision fp16       # is this one cached?

Both need TensorRT, pycuda and a CUDA device (the `gpu` extra on an NVIDIA host); elsewhere
they stop with one line saying what is missing, and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engines import EngineUnavailable, ModelError
from stream.cli import at_least_one

DEFAULT_CACHE = "~/.cache/medstream/engines"
PRECISIONS = ("model", "fp32", "fp16", "int8")


def _onnx(model: str) -> Path:
    from engines.registry import list_models, resolve_model

    if model in list_models():
        return resolve_model(model).onnx_path
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelError(f"{model!r} is neither a bundled model nor an existing .onnx file")
    return path


def _build(args: argparse.Namespace) -> int:
    from engines.tensorrt_engine import ensure_engine

    built = ensure_engine(_onnx(args.model), args.precision, args.cache, args.max_batch)
    what = f"built in {built.seconds:.1f} s" if built.built else "already cached"
    print(f"{built.path} ({what})")
    p = built.parts
    print(
        f"  precision {p.precision}, GPU {p.gpu_name} (sm {p.compute_capability[0]}."
        f"{p.compute_capability[1]}), TensorRT {p.tensorrt_version}, model sha256 {p.model_sha256[:16]}"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from engines.engine_cache import EngineCache, EngineKeyParts, engine_cache_key, file_sha256
    from engines.tensorrt_engine import _trt, gpu_identity, model_for_precision

    trt = _trt()
    gpu, capability = gpu_identity()
    cache = EngineCache(args.cache)
    print(f"TensorRT {trt.__version__}; GPU {gpu} (sm {capability[0]}.{capability[1]})")
    print(f"cache {cache.folder}")
    for entry in cache.entries():
        here = entry.get("gpu_name") == gpu and entry.get("tensorrt_version") == trt.__version__
        mark = "usable here" if here else "other GPU or TensorRT"
        print(f"  {entry.get('key')}  {entry.get('precision', '?')}  {mark}")
    if args.model:
        source, precision = model_for_precision(_onnx(args.model), args.precision, cache.folder)
        parts = EngineKeyParts(file_sha256(source), gpu, capability, trt.__version__, precision)
        key = engine_cache_key(parts)
        state = "cached" if cache.path(key).is_file() else "not built yet (medstream engine build)"
        print(f"{args.model} {precision}: {key} {state}")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return args.engine_func(args)
    except (EngineUnavailable, ModelError, ValueError, RuntimeError, OSError) as e:
        print(
            f"medstream engine: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            file=sys.stderr,
        )
        return 1


def register(sub: argparse._SubParsersAction) -> None:
    engine = sub.add_parser("engine", help="build TensorRT engines, show the engine cache")
    actions = engine.add_subparsers(dest="engine_command", required=True)
    build = actions.add_parser(
        "build", help="build (or find cached) the TensorRT engine of a model"
    )
    build.add_argument("model", help="bundled model name or path to an .onnx file")
    build.add_argument(
        "--precision", choices=PRECISIONS, default="model", help="engine precision (model: the card's)"
    )
    build.add_argument(
        "--max-batch", type=at_least_one, default=4, help="largest batch of a dynamic model"
    )
    build.add_argument("--cache", default=DEFAULT_CACHE, help="engine cache folder")
    build.set_defaults(func=_run, engine_func=_build)
    info = actions.add_parser("info", help="TensorRT version, GPU, cached engines")
    info.add_argument("model", nargs="?", help="also say whether this model's engine is cached")
    info.add_argument(
        "--precision", choices=PRECISIONS, default="model", help="precision of the cached engine"
    )
    info.add_argument("--cache", default=DEFAULT_CACHE, help="engine cache folder")
    info.set_defaults(func=_run, engine_func=_info)

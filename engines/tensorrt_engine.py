"""The TensorRT engine (the `gpu` extra: tensorrt, pycuda), for TensorRT 10.x and 11.x.

Build: ONNX -> `OnnxParser` -> a strongly typed network (the only kind in 11.x; in 10.x the
STRONGLY_TYPED creation flag asks for it), so precision comes from the model file: fp32 as
exported, fp16 from an fp16 copy (engines/precision.py), int8 from a Q/DQ model. No FP16/INT8
builder flags and no calibrators are used (11.x removed them). A dynamic batch axis gets one
optimisation profile (1 .. max_batch, optimum 1). The serialized engine is cached on disk
(engines/engine_cache.py) under a key of model hash, GPU name, compute capability, TensorRT
version and precision.

Run: named I/O tensors (`num_io_tensors`, `get_tensor_name/mode/shape/dtype`), one device
buffer per tensor bound with `set_tensor_address`, `execute_async_v3` on a pycuda stream.
Per frame: the uint8 frame is copied in once (page-locked staging buffer), preprocessed by the
CUDA kernel straight into the input buffer, and the output copied out once into page-locked
host memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.api import EngineUnavailable
from engines.backends import tensorrt_problem
from engines.engine_cache import EngineCache, EngineKeyParts, engine_cache_key, file_sha256
from engines.onnxrt import TensorInfo
from engines.registry import ModelError, ModelRef

WORKSPACE_BYTES = 1 << 30
MAX_BATCH = 4


def _trt():  # type: ignore[no-untyped-def]
    problem = tensorrt_problem()
    if problem is not None:
        raise EngineUnavailable(f"TensorRT is not usable here: {problem}")
    import tensorrt as trt

    return trt


def trt_major(trt) -> int:  # type: ignore[no-untyped-def]
    return int(trt.__version__.split(".")[0])


@dataclass(frozen=True)
class BuiltEngine:
    path: Path
    key: str
    parts: EngineKeyParts
    built: bool  # False: loaded from the cache
    seconds: float


def gpu_identity() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of CUDA device 0."""
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(0)
    return dev.name(), dev.compute_capability()


def model_for_precision(onnx_path: Path, precision: str, cache_dir: Path) -> tuple[Path, str]:
    """(ONNX file to build from, precision it gives): `precision` is model, fp16, fp32 or int8."""
    from engines.precision import fp16_copy, is_qdq

    quantized = is_qdq(onnx_path)
    if precision == "fp16":
        if quantized:
            raise ModelError(f"{onnx_path.name} is an int8 (Q/DQ) model; build it as int8")
        return fp16_copy(onnx_path, cache_dir), "fp16"
    if precision == "int8" and not quantized:
        raise ModelError(
            f"{onnx_path.name} has no Q/DQ nodes: make an int8 model first "
            "(python -m tools.quantize --model MODEL --out DIR)"
        )
    if precision == "fp32" and quantized:
        raise ModelError(f"{onnx_path.name} is an int8 (Q/DQ) model, not fp32")
    if precision not in ("model", "fp32", "int8"):
        raise ValueError(f"precision must be model, fp32, fp16 or int8, got {precision!r}")
    return onnx_path, "int8" if quantized else "fp32"


def build_serialized(trt, onnx_path: Path, max_batch: int = MAX_BATCH) -> bytes:  # type: ignore[no-untyped-def]
    """Parse and build a strongly typed engine; errors name the file and TensorRT's reason."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt) == 10:  # 11.x: always strongly typed (the flag is deprecated, ignored)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ModelError(f"{onnx_path.name}: input {tensor.name} {shape}: only batch may vary")
        if shape[0] < 0:
            profile = profile or builder.create_optimization_profile()
            rest = shape[1:]
            profile.set_shape(tensor.name, (1, *rest), (1, *rest), (max_batch, *rest))
    if profile is not None:
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log)")
    return bytes(plan)


def ensure_engine(
    onnx_path: Path, precision: str, cache_dir: Path | str, max_batch: int = MAX_BATCH
) -> BuiltEngine:
    """The cached engine for this model / GPU / TensorRT / precision, built if missing."""
    trt = _trt()
    cache = EngineCache(cache_dir)
    source, actual = model_for_precision(Path(onnx_path), precision, cache.folder)
    gpu, capability = gpu_identity()
    parts = EngineKeyParts(file_sha256(source), gpu, capability, trt.__version__, actual)
    key = engine_cache_key(parts)
    if cache.load(key) is not None:
        return BuiltEngine(cache.path(key), key, parts, False, 0.0)
    t0 = time.perf_counter()
    plan = build_serialized(trt, source, max_batch)
    seconds = time.perf_counter() - t0
    extra = {"source": str(source), "max_batch": max_batch, "build_seconds": round(seconds, 2)}
    return BuiltEngine(cache.store(key, plan, parts, extra), key, parts, True, seconds)


class TensorRTEngine:
    """A deserialized engine with its buffers, stream and CUDA preprocessing."""

    def __init__(
        self, ref: ModelRef, precision: str = "model", cache_dir: str = "~/.cache/medstream/engines"
    ) -> None:
        trt = _trt()
        import pycuda.driver as cuda

        from engines.cuda_preprocess import CudaPreprocessor

        self._cuda = cuda
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            self.built = ensure_engine(ref.onnx_path, precision, cache_dir)
            self.precision = self.built.parts.precision
            self.device = f"cuda:0 ({self.built.parts.gpu_name})"
            logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.built.path.read_bytes())
            if self._engine is None:
                raise RuntimeError(f"TensorRT could not load {self.built.path}")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._bind(trt, cuda)
            self._pre: CudaPreprocessor | None = CudaPreprocessor(ref.card.input, self._stream)
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            raise
        self._ctx.pop()  # pushed again around every call: the stage may use other contexts

    def _bind(self, trt, cuda) -> None:  # type: ignore[no-untyped-def]
        """Batch-1 shapes, one device buffer per tensor, page-locked host buffers for outputs."""
        engine, context = self._engine, self._context
        infos_in: list[TensorInfo] = []
        infos_out: list[TensorInfo] = []
        self._dev: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(engine.get_tensor_shape(name))
                context.set_input_shape(name, (1, *shape[1:]))
        for name in names:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # e.g. NMS in the graph: as many rows as boxes kept
                raise ModelError(
                    f"TensorRT: tensor {name!r} has a data-dependent shape {shape}; this engine "
                    "binds fixed-size buffers: use backend onnxruntime for this model"
                )
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = cuda.pagelocked_empty(shape, dtype)
            self._host[name] = host
            self._dev[name] = cuda.mem_alloc(host.nbytes)
            context.set_tensor_address(name, int(self._dev[name]))
            info = TensorInfo(name, (None, *shape[1:]), dtype)
            (infos_in if is_input else infos_out).append(info)
        self.inputs, self.outputs = tuple(infos_in), tuple(infos_out)

    def _execute_and_fetch(self) -> dict[str, np.ndarray]:
        cuda, stream = self._cuda, self._stream
        if not self._context.execute_async_v3(stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for info in self.outputs:
            cuda.memcpy_dtoh_async(self._host[info.name], self._dev[info.name], stream)
        stream.synchronize()
        return {info.name: self._host[info.name].copy() for info in self.outputs}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Batch-1 tensors in (already preprocessed): one copy in per input, one out per output."""
        if set(feeds) != {i.name for i in self.inputs}:
            raise ValueError(f"inputs must be exactly {[i.name for i in self.inputs]}")
        self._ctx.push()
        try:
            for info in self.inputs:
                x = feeds[info.name]
                host = self._host[info.name]
                if x.dtype != host.dtype or x.shape != host.shape:
                    raise ValueError(f"input {info.name!r} must be {host.shape} {host.dtype}")
                np.copyto(host, x)
                self._cuda.memcpy_htod_async(self._dev[info.name], host, self._stream)
            return self._execute_and_fetch()
        finally:
            self._ctx.pop()

    def run_frame(self, image: np.ndarray, pixel_format: str) -> dict[str, np.ndarray]:
        """A uint8 frame in: CUDA preprocessing writes the input buffer; then execute."""
        (info,) = self.inputs
        self._ctx.push()
        try:
            if self._pre is None:
                raise RuntimeError("TensorRT engine used after close()")
            self._pre(image, pixel_format, self._dev[info.name])
            return self._execute_and_fetch()
        finally:
            self._ctx.pop()

    def close(self) -> None:
        if getattr(self, "_context", None) is None:
            return
        self._ctx.push()  # device memory is freed in its own context
        try:
            self._context = None
            self._engine = None
            self._pre = None
            self._dev.clear()
            self._host.clear()
        finally:
            self._ctx.pop()
            self._ctx.detach()

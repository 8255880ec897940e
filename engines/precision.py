"""Model precision from the model file itself (what TensorRT 11 requires, and 10 accepts).

fp16: an fp16 copy of an fp32 ONNX model (weights and arithmetic in fp16, inputs and outputs
kept fp32 so preprocessing and postprocessing do not change), made with onnxconverter-common
(the `gpu` extra) and cached beside the engines under the source file's hash.
int8: a model with explicit QuantizeLinear/DequantizeLinear nodes (tools/quantize.py writes
one with ONNX Runtime's static quantisation, calibrated on phantom frames).

u8s8 saturation: on x86 without VNNI (AVX2, or AVX-512 without VNNI) ONNX Runtime's int8
kernels multiply u8 activations (0..255) by s8 weights with vpmaddubsw, which adds each pair of
products into a saturating 16-bit sum before widening. A pair can saturate when
2 x 255 x max|w| > 32767, i.e. when a weight reaches |w| > 64; 7-bit weights (`reduce_range`)
cannot. VNNI (vpdpbusd) and AMX sum into 32 bits and never saturate.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engines.api import EngineUnavailable
from engines.engine_cache import file_sha256

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
INT16_MAX = 32767
U8_MAX = 255


def is_qdq(onnx_path: Path | str) -> bool:
    """True if the ONNX graph has explicit Q/DQ nodes (an int8 model)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in QDQ_OPS for n in graph.node)


def max_u8s8_pair_sum(onnx_path: Path | str) -> int:
    """The largest 16-bit pair sum (2 x 255 x max|w|) a u8s8 kernel can form from the model's
    int8 weights (the int8 initialisers its DequantizeLinear nodes read); 0 if it has none.

    Above INT16_MAX the model can give wrong results on x86 CPUs without VNNI.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    int8 = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims}
    largest = 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in int8:
            w = numpy_helper.to_array(int8[node.input[0]]).astype(int)
            largest = max(largest, int(abs(w).max(initial=0)))
    return 2 * U8_MAX * largest


def fp16_copy(onnx_path: Path | str, folder: Path | str) -> Path:
    """The fp16 version of `onnx_path` (made once, then reused from `folder`)."""
    for module in ("onnx", "onnxconverter_common"):
        if importlib.util.find_spec(module) is None:
            raise EngineUnavailable(f"fp16 conversion needs {module}: pip install 'medstream[gpu]'")
    import onnx
    from onnxconverter_common import float16

    folder = Path(folder).expanduser()
    out = folder / f"{Path(onnx_path).stem}-{file_sha256(onnx_path)[:16]}-fp16.onnx"
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    _outputs_back_to_fp32(model)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


def _outputs_back_to_fp32(model) -> None:  # type: ignore[no-untyped-def]
    """Cast any graph output the converter left in fp16 back to fp32 (it does after a Resize)."""
    from onnx import TensorProto, helper

    for out in model.graph.output:
        tensor_type = out.type.tensor_type
        if tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        inner = f"{out.name}_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        model.graph.node.append(
            helper.make_node(
                "Cast", [inner], [out.name], to=TensorProto.FLOAT, name=f"{out.name}_to_fp32"
            )
        )
        tensor_type.elem_type = TensorProto.FLOAT

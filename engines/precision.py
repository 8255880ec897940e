"""Model precision from the model file itself (what TensorRT 11 requires, and 10 accepts).

fp16: an fp16 copy of an fp32 ONNX model (weights and arithmetic in fp16, inputs and outputs
kept fp32 so preprocessing and postprocessing do not change), made with onnxconverter-common
(the `gpu` extra) and cached beside the engines under the source file's hash.
int8: a model with explicit QuantizeLinear/DequantizeLinear nodes (tools/quantize.py writes
one with ONNX Runtime's static quantisation, calibrated on phantom frames).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engines.api import EngineUnavailable
from engines.engine_cache import file_sha256

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def is_qdq(onnx_path: Path | str) -> bool:
    """True if the ONNX graph has explicit Q/DQ nodes (an int8 model)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in QDQ_OPS for n in graph.node)


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

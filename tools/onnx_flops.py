"""Count an ONNX model's arithmetic: 2 x multiply-accumulates of its Conv/Gemm/MatMul nodes.

    python -m tools.onnx_flops engines/models/us-seg/model.onnx

Shapes come from ONNX shape inference with every dynamic axis set to 1 (batch 1). Elementwise
ops, resizes and pooling are listed separately as output elements, not counted as FLOPs.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import shape_inference


@dataclass(frozen=True)
class FlopCount:
    flops: int  # 2 x MACs of Conv, ConvTranspose, Gemm, MatMul
    other_elements: int  # output elements of every other node
    unknown: tuple[str, ...]  # counted nodes whose shapes could not be inferred

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    for value in list(model.graph.input) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = 1
    inferred = shape_inference.infer_shapes(model, data_prop=True)  # shapes computed by Shape ops
    shapes: dict[str, tuple[int, ...]] = {}
    values = (
        list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    )
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def count_flops(path: Path | str) -> FlopCount:
    """FLOPs of one batch-1 run of the model at its declared input size."""
    model = onnx.load(str(path))
    shapes = _shapes(model)
    flops = other = 0
    unknown = []
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            if out is None or w is None:
                unknown.append(node.name or node.op_type)
                continue
            if node.op_type == "Conv":  # w: Co x Ci/g x k..: each output sums Ci/g x k.. products
                macs = math.prod(out) * math.prod(w[1:])
            else:  # w: Ci x Co/g x k..: each input element scatters to Co/g x k.. outputs
                x = shapes.get(node.input[0])
                if x is None:
                    unknown.append(node.name or node.op_type)
                    continue
                macs = math.prod(x) * math.prod(w[1:])
            flops += 2 * macs
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if out is None or a is None:
                unknown.append(node.name or node.op_type)
                continue
            flops += 2 * math.prod(out) * a[-1]
        elif out is not None:
            other += math.prod(out)
    return FlopCount(flops, other, tuple(unknown))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    args = parser.parse_args(argv)
    count = count_flops(args.model)
    print(
        f"{count.gflops:.4f} GFLOPs (2 x MACs, batch 1); other ops: {count.other_elements} output elements"
    )
    if count.unknown:
        print(f"not counted (shape unknown): {', '.join(count.unknown)}")


if __name__ == "__main__":
    main()

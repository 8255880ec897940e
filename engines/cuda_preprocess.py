"""CUDA preprocessing (pycuda): the uint8 frame -> the engine's input buffer, on the GPU.

The kernel (engines/cuda/preprocess.cu) computes the function in engines/preprocess.py. Its
host-side inputs are plain numpy and are tested on the CPU: `resize_tables` (bilinear source
indices and weights per output row / column, float64 math rounded once to float32) and
`kernel_params` (colour matrix, scale, offset). Agreement with the CPU path: within
CUDA_TOLERANCE in normalised units for fp32 output (fp16 output: fp16 rounding on top).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from engines.pixels import PIXEL_FORMATS
from engines.preprocess import _colour_matrix
from engines.registry import ModelInput

KERNEL_FILE = Path(__file__).resolve().parent / "cuda" / "preprocess.cu"
CUDA_TOLERANCE = 1e-4  # normalised units, fp32 output (the CPU path's own stated tolerance)
BLOCK = (32, 8, 1)


@lru_cache(maxsize=32)
def resize_tables(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0 int32, i1 int32, weight float32) for one axis: source `src` px -> `dst` px.

    s = clamp((i + 0.5) * src / dst - 0.5, 0, src - 1); i0 = floor(s); i1 = min(i0 + 1, src - 1);
    weight = s - i0 (OpenCV's INTER_LINEAR convention, as engines/preprocess.py).
    """
    s = np.clip((np.arange(dst, dtype=np.float64) + 0.5) * src / dst - 0.5, 0, src - 1)
    i0 = np.floor(s).astype(np.int32)
    return i0, np.minimum(i0 + 1, src - 1).astype(np.int32), (s - i0).astype(np.float32)


def source_channels(pixel_format: str) -> int:
    """Cs: the channels of a frame of one of the engines' (8-bit) formats."""
    return PIXEL_FORMATS[pixel_format].channels or 1


def kernel_params(pixel_format: str, spec: ModelInput) -> np.ndarray:
    """15 float32: colour matrix 3x3 (Cm x Cs, zero-padded), scale[3], offset[3]."""
    cs, cm = source_channels(pixel_format), spec.num_channels
    matrix = _colour_matrix(pixel_format, spec.channels)
    if matrix is None:
        matrix = np.eye(cm, cs, dtype=np.float32)
    params = np.zeros(15, np.float32)
    params[:9].reshape(3, 3)[:cm, :cs] = matrix
    params[9 : 9 + cm] = [1.0 / (255.0 * s) for s in spec.std]
    params[12 : 12 + cm] = [m / s for m, s in zip(spec.mean, spec.std, strict=True)]
    return params


def kernel_source() -> str:
    return KERNEL_FILE.read_text()


class CudaPreprocessor:
    """Runs the kernel on a CUDA stream, writing into a caller's device buffer.

    Per frame: one host -> device copy of the uint8 frame (from a page-locked staging buffer),
    one kernel launch. Tables for a frame size are uploaded once and reused.
    """

    def __init__(self, spec: ModelInput, stream: object) -> None:
        import pycuda.driver as cuda
        from pycuda.compiler import SourceModule

        self._cuda = cuda
        self.spec = spec
        self.stream = stream
        module = SourceModule(kernel_source(), no_extern_c=True, options=["-std=c++17"])
        self._kernel = module.get_function(
            "ms_preprocess_f16" if spec.dtype == "float16" else "ms_preprocess_f32"
        )
        self._params: dict[str, object] = {}
        self._tables: dict[tuple[int, int], tuple[object, ...]] = {}
        self._staging: np.ndarray | None = None
        self._frame_dev: object | None = None

    def _device(self, array: np.ndarray) -> object:
        dev = self._cuda.mem_alloc(max(array.nbytes, 1))
        self._cuda.memcpy_htod(dev, np.ascontiguousarray(array))
        return dev

    def __call__(self, image: np.ndarray, pixel_format: str, dst: object) -> None:
        """Preprocess `image` (already checked: `check_image`) into device pointer `dst`
        (1 x C x h x w of the spec's dtype)."""
        spec, cuda = self.spec, self._cuda
        h, w = image.shape[:2]
        if (h, w) not in self._tables:
            ys, xs = resize_tables(h, spec.height), resize_tables(w, spec.width)
            self._tables[(h, w)] = tuple(self._device(a) for a in (*ys, *xs))
        if pixel_format not in self._params:
            self._params[pixel_format] = self._device(kernel_params(pixel_format, spec))
        if self._staging is None or self._staging.nbytes < image.nbytes:
            self._staging = cuda.pagelocked_empty(image.nbytes, np.uint8)
            self._frame_dev = cuda.mem_alloc(image.nbytes)
        staged = self._staging[: image.nbytes]
        np.copyto(staged, image.reshape(-1))
        cuda.memcpy_htod_async(self._frame_dev, staged, self.stream)
        grid = (-(-spec.width // BLOCK[0]), -(-spec.height // BLOCK[1]), 1)
        self._kernel(
            self._frame_dev,
            np.int32(w),
            np.int32(source_channels(pixel_format)),
            *self._tables[(h, w)],
            self._params[pixel_format],
            dst,
            np.int32(spec.height),
            np.int32(spec.width),
            np.int32(spec.num_channels),
            block=BLOCK,
            grid=grid,
            stream=self.stream,
        )

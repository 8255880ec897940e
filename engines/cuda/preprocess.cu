// medstream CUDA preprocessing: uint8 frame -> the engine's NCHW input, in one kernel.
//
// Computes exactly the function documented in engines/preprocess.py:
//   1. bilinear resize, OpenCV half-pixel convention; the per-row and per-column source
//      indices and weights (y0, y1, ay / x0, x1, ax) are computed once per frame size on the
//      host in float64 (engines/cuda_preprocess.py: resize_tables) and passed in;
//   2. colour conversion as a Cm x Cs matrix (BT.601 grey, channel swap, grey -> 3 channels);
//   3. v = r * scale[c] - offset[c], with scale = 1 / (255 std[c]), offset = mean[c] / std[c];
//   4. written as planar CHW, fp32 or fp16 (round to nearest even).
// One thread per output pixel; all model channels of that pixel are written by it.
// The same file compiles as plain C++ (tests/cuda_shim.h) so its arithmetic is checked on a CPU.

#ifdef __CUDACC__
#include <cuda_fp16.h>
#endif

// params: matrix[3][3] (row c = model channel, column s = source channel), scale[3], offset[3]
#define MS_PARAMS 15

template <typename T>
__device__ inline T ms_convert(float v);

template <>
__device__ inline float ms_convert<float>(float v) { return v; }

template <>
__device__ inline __half ms_convert<__half>(float v) { return __float2half_rn(v); }

template <typename T>
__device__ inline void ms_preprocess_pixel(
    const unsigned char* src, int src_w, int cs,
    const int* y0, const int* y1, const float* ay,
    const int* x0, const int* x1, const float* ax,
    const float* params, T* dst, int dst_h, int dst_w, int cm, int x, int y)
{
    const float wy = ay[y], wx = ax[x];
    const unsigned char* r0 = src + (size_t)y0[y] * src_w * cs;
    const unsigned char* r1 = src + (size_t)y1[y] * src_w * cs;
    const int c0 = x0[x] * cs, c1 = x1[x] * cs;
    float r[3];
    for (int s = 0; s < cs; ++s) {
        const float top = (1.0f - wx) * (float)r0[c0 + s] + wx * (float)r0[c1 + s];
        const float bottom = (1.0f - wx) * (float)r1[c0 + s] + wx * (float)r1[c1 + s];
        r[s] = (1.0f - wy) * top + wy * bottom;
    }
    const size_t plane = (size_t)dst_h * dst_w;
    const size_t at = (size_t)y * dst_w + x;
    for (int c = 0; c < cm; ++c) {
        float v = 0.0f;
        for (int s = 0; s < cs; ++s) v += params[c * 3 + s] * r[s];
        dst[c * plane + at] = ms_convert<T>(v * params[9 + c] - params[12 + c]);
    }
}

#define MS_KERNEL(NAME, T)                                                                   \
extern "C" __global__ void NAME(                                                             \
    const unsigned char* src, int src_w, int cs,                                             \
    const int* y0, const int* y1, const float* ay,                                           \
    const int* x0, const int* x1, const float* ax,                                           \
    const float* params, T* dst, int dst_h, int dst_w, int cm)                               \
{                                                                                            \
    const int x = blockIdx.x * blockDim.x + threadIdx.x;                                     \
    const int y = blockIdx.y * blockDim.y + threadIdx.y;                                     \
    if (x >= dst_w || y >= dst_h) return;                                                    \
    ms_preprocess_pixel<T>(src, src_w, cs, y0, y1, ay, x0, x1, ax, params, dst, dst_h,       \
                           dst_w, cm, x, y);                                                 \
}

MS_KERNEL(ms_preprocess_f32, float)
MS_KERNEL(ms_preprocess_f16, __half)

// Compiles engines/cuda/preprocess.cu as plain C++ and runs its kernels on the CPU, one
// "thread" at a time over the whole grid, so the kernel's arithmetic is tested without a GPU.
// Built by tests/test_cuda_kernel_cpu.py with -DMS_KERNEL_FILE="path/to/preprocess.cu".
#include <cstddef>

#define __global__
#define __device__
struct ms_dim3 { int x, y, z; };
static ms_dim3 blockIdx, threadIdx, blockDim;
typedef _Float16 __half;
static inline __half __float2half_rn(float v) { return (__half)v; }

#include MS_KERNEL_FILE

template <typename T, typename K>
static void run_grid(K kernel, const unsigned char* src, int src_w, int cs, const int* y0,
                     const int* y1, const float* ay, const int* x0, const int* x1,
                     const float* ax, const float* params, T* dst, int dst_h, int dst_w, int cm,
                     int bx, int by)
{
    blockDim = {bx, by, 1};
    for (int gy = 0; gy < (dst_h + by - 1) / by; ++gy)
        for (int gx = 0; gx < (dst_w + bx - 1) / bx; ++gx)
            for (int ty = 0; ty < by; ++ty)
                for (int tx = 0; tx < bx; ++tx) {
                    blockIdx = {gx, gy, 0};
                    threadIdx = {tx, ty, 0};
                    kernel(src, src_w, cs, y0, y1, ay, x0, x1, ax, params, dst, dst_h, dst_w, cm);
                }
}

extern "C" void shim_run(int fp16, const unsigned char* src, int src_w, int cs, const int* y0,
                         const int* y1, const float* ay, const int* x0, const int* x1,
                         const float* ax, const float* params, void* dst, int dst_h, int dst_w,
                         int cm, int bx, int by)
{
    if (fp16)
        run_grid<__half>(ms_preprocess_f16, src, src_w, cs, y0, y1, ay, x0, x1, ax, params,
                         (__half*)dst, dst_h, dst_w, cm, bx, by);
    else
        run_grid<float>(ms_preprocess_f32, src, src_w, cs, y0, y1, ay, x0, x1, ax, params,
                        (float*)dst, dst_h, dst_w, cm, bx, by);
}

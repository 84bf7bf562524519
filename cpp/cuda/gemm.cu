// gemm.cu — matrix products on the device: fastmlp's own tiled kernel, and cuBLAS
// when it can be loaded at run time (dlopen; never linked, no cuBLAS header).
//
//   C (m × n, rows ldc apart) = op(A) (m × k) · op(B) (k × n) + beta · C, then the
//   epilogue: z = C + bias[col]; z_out = z (when asked); C = f(z).
//
// Own kernel: a 64 × 64 tile of C per block of 256 threads, k in steps of 16
// through shared memory; each thread keeps 4 × 4 outputs (rows ty + 16 i, columns
// tx + 16 j, so a warp's loads and stores run along rows). FFMA only, each output
// summed over k in order: the same bits run after run, for float and double. Every
// load outside op(A) or op(B) reads 0, every store outside C is skipped, so any
// m, n, k works (1, 3, 7, 33, 257 ...).
//
// cuBLAS: row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so cuBLAS
// gets B as its first operand and A as its second, with the same transposes.
// Float stays float32 exact (CUBLAS_DEFAULT_MATH: no TF32). Used for products of
// at least 2^21 multiply-adds (below that the launch and the own kernel are as
// fast); its epilogue is a separate elementwise kernel. One handle per device
// and stream, made on first use or by cublas_prepare, each with its own 32 MiB
// workspace from cudaMalloc (set with cublasSetWorkspace, so the product can be
// captured in a CUDA graph), kept until cublas_release(stream). A stream captured
// before it has a handle throws (a capture cannot allocate): cublas_prepare first.
// cuBLAS is deterministic on one stream with its workspace.
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "device.cuh"
#include "math.cuh"

namespace fastmlp::cuda {
namespace {

// ---- the epilogue -----------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void finish_element(const Epilogue<T>& e, T* c, index ldc, index row,
                                               index col, T value) {
    const T z = e.bias != nullptr ? value + e.bias[col] : value;
    if (e.z_out != nullptr) e.z_out[row * e.ldz + col] = z;
    c[row * ldc + col] = activate(e.activation, z);
}

// ---- own tiled kernel -------------------------------------------------------------------
constexpr int tile_m = 64, tile_n = 64, tile_k = 16;
constexpr int gemm_threads = 256;  // 16 × 16, each 4 × 4 outputs
constexpr int per_thread = 4;

// Loads a tile of a rows × k matrix X into shared memory: s[kk][r] = X(r0 + r, k0 + kk), for
// `width` rows and tile_k columns, zeros outside X. X is stored row by row (x[r · ld + kk]), or
// transposed (x[kk · ld + r]); either way consecutive threads read consecutive addresses
// (4 values a thread for width 64).
template <typename T, int width>
__device__ void load_tile(T (*s)[width + 1], const T* __restrict__ x, index ld, bool stored_transposed,
                          index rows, index k, index r0, index k0, int tid) {
    for (int e = tid; e < width * tile_k; e += gemm_threads) {
        int r, kk;
        if (stored_transposed) {
            kk = e / width;
            r = e % width;
        } else {
            r = e / tile_k;
            kk = e % tile_k;
        }
        const index gr = r0 + r, gk = k0 + kk;
        T v = T(0);
        if (gr < rows && gk < k) v = stored_transposed ? x[gk * ld + gr] : x[gr * ld + gk];
        s[kk][r] = v;
    }
}

// Grid: x over column tiles, y over row tiles (a loop when there are more than 65535).
template <typename T>
__global__ void __launch_bounds__(gemm_threads)
    gemm_tiled_kernel(bool trans_a, bool trans_b, index m, index n, index k, const T* __restrict__ a,
                      index lda, const T* __restrict__ b, index ldb, T beta, T* c, index ldc,
                      Epilogue<T> epilogue) {
    // +1: the column-major stores of a transposed operand's tile avoid bank conflicts.
    __shared__ T as[tile_k][tile_m + 1];  // as[kk][i] = op(A)(row0 + i, k0 + kk)
    __shared__ T bs[tile_k][tile_n + 1];  // bs[kk][j] = op(B)(k0 + kk, col0 + j)
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const index col0 = index(blockIdx.x) * tile_n;
    const index tiles_m = (m + tile_m - 1) / tile_m;
    for (index tile_row = blockIdx.y; tile_row < tiles_m; tile_row += gridDim.y) {
        const index row0 = tile_row * tile_m;
        T acc[per_thread][per_thread];
#pragma unroll
        for (int i = 0; i < per_thread; ++i)
#pragma unroll
            for (int j = 0; j < per_thread; ++j) acc[i][j] = T(0);

        for (index k0 = 0; k0 < k; k0 += tile_k) {
            // op(A)'s tile, and op(B)'s as op(B)ᵀ's (n × k, stored transposed when B is not).
            load_tile<T, tile_m>(as, a, lda, trans_a, m, k, row0, k0, tid);
            load_tile<T, tile_n>(bs, b, ldb, !trans_b, n, k, col0, k0, tid);
            __syncthreads();  // the tiles are whole
#pragma unroll
            for (int kk = 0; kk < tile_k; ++kk) {
                T av[per_thread], bv[per_thread];
#pragma unroll
                for (int i = 0; i < per_thread; ++i) av[i] = as[kk][ty + 16 * i];
#pragma unroll
                for (int j = 0; j < per_thread; ++j) bv[j] = bs[kk][tx + 16 * j];
#pragma unroll
                for (int i = 0; i < per_thread; ++i)
#pragma unroll
                    for (int j = 0; j < per_thread; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
            }
            __syncthreads();  // every thread is done with the tiles before the next load
        }

#pragma unroll
        for (int i = 0; i < per_thread; ++i) {
            const index row = row0 + ty + 16 * i;
            if (row >= m) continue;
#pragma unroll
            for (int j = 0; j < per_thread; ++j) {
                const index col = col0 + tx + 16 * j;
                if (col >= n) continue;
                T value = acc[i][j];
                if (beta != T(0)) value = value + beta * c[row * ldc + col];
                finish_element(epilogue, c, ldc, row, col, value);
            }
        }
    }
}

// The epilogue alone (after cuBLAS), grid-stride over the m × n elements.
template <typename T>
__global__ void epilogue_kernel(index m, index n, T* c, index ldc, Epilogue<T> epilogue) {
    const index total = m * n;
    for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
         e += index(gridDim.x) * blockDim.x) {
        const index row = e / n, col = e % n;
        finish_element(epilogue, c, ldc, row, col, c[row * ldc + col]);
    }
}

bool needs_epilogue(Activation activation, const void* bias, const void* z_out) {
    return activation != Activation::linear || bias != nullptr || z_out != nullptr;
}

template <typename T>
void gemm_own(cudaStream_t stream, Op op_a, Op op_b, index m, index n, index k, const T* a,
              index lda, const T* b, index ldb, T beta, T* c, index ldc, const Epilogue<T>& epilogue) {
    const index tiles_n = (n + tile_n - 1) / tile_n;
    const index tiles_m = (m + tile_m - 1) / tile_m;
    require(tiles_n <= 0x7fffffff, "gemm: n is too large for one launch");
    const dim3 grid(unsigned(tiles_n), unsigned(tiles_m < 65535 ? tiles_m : 65535));
    gemm_tiled_kernel<T><<<grid, gemm_threads, 0, stream>>>(op_a == Op::T, op_b == Op::T, m, n, k, a,
                                                            lda, b, ldb, beta, c, ldc, epilogue);
    check_launch("gemm (own kernel)");
}

// ---- cuBLAS, loaded at run time ---------------------------------------------------------
// The few C functions used, as cublas_api.h declares them (cuBLAS 12 and 13 alike):
// cublasStatus_t is an int (0: success), cublasHandle_t an opaque pointer,
// cublasOperation_t N = 0, T = 1, cublasMath_t CUBLAS_DEFAULT_MATH = 0.
using cublas_handle = void*;
using create_fn = int (*)(cublas_handle*);
using destroy_fn = int (*)(cublas_handle);
using set_stream_fn = int (*)(cublas_handle, cudaStream_t);
using set_workspace_fn = int (*)(cublas_handle, void*, std::size_t);
using set_math_mode_fn = int (*)(cublas_handle, int);
using sgemm_fn = int (*)(cublas_handle, int, int, int, int, int, const float*, const float*, int,
                         const float*, int, const float*, float*, int);
using dgemm_fn = int (*)(cublas_handle, int, int, int, int, int, const double*, const double*, int,
                         const double*, int, const double*, double*, int);

struct CublasApi {
    std::string name;
    create_fn create = nullptr;
    destroy_fn destroy = nullptr;
    set_stream_fn set_stream = nullptr;
    set_workspace_fn set_workspace = nullptr;
    set_math_mode_fn set_math_mode = nullptr;
    sgemm_fn sgemm = nullptr;
    dgemm_fn dgemm = nullptr;
};

constexpr std::size_t workspace_bytes = std::size_t(32) << 20;
constexpr double cublas_min_work = double(1 << 21);  // m · n · k

std::mutex load_mutex;
std::atomic<const CublasApi*> loaded_api{nullptr};  // set once, never freed (nor unloaded)
std::atomic<bool> cublas_on{true};
std::once_flag automatic_load;

bool disabled_by_environment() {
    const char* value = std::getenv("FASTMLP_CUDA_GEMM");
    return value != nullptr && std::string(value) == "own";
}

// dlopen + the symbols; nullptr (and the library closed) when anything is missing.
const CublasApi* open_library(const std::string& path) {
    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) return nullptr;
    auto* api = new CublasApi;
    api->name = path;
    auto symbol = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(library, name));
        return fn != nullptr;
    };
    const bool complete = symbol(api->create, "cublasCreate_v2") &&
                          symbol(api->destroy, "cublasDestroy_v2") &&
                          symbol(api->set_stream, "cublasSetStream_v2") &&
                          symbol(api->set_workspace, "cublasSetWorkspace_v2") &&
                          symbol(api->set_math_mode, "cublasSetMathMode") &&
                          symbol(api->sgemm, "cublasSgemm_v2") &&
                          symbol(api->dgemm, "cublasDgemm_v2");
    if (!complete) {
        delete api;
        dlclose(library);
        return nullptr;
    }
    return api;
}

std::string load_locked(const std::string& path) {
    if (const CublasApi* api = loaded_api.load()) return api->name;
    const CublasApi* api = nullptr;
    if (!path.empty()) {
        api = open_library(path);
    } else {
        if (const char* env = std::getenv("FASTMLP_CUBLAS"); env != nullptr && *env != '\0')
            api = open_library(env);
        if (api == nullptr) api = open_library("libcublas.so.13");
        if (api == nullptr) api = open_library("libcublas.so.12");
    }
    if (api == nullptr) return "";
    loaded_api.store(api);
    return api->name;
}

// The cuBLAS to use now, or nullptr; the first call tries the automatic load.
const CublasApi* active_api() {
    if (!cublas_on.load() || disabled_by_environment()) return nullptr;
    std::call_once(automatic_load, [] {
        std::lock_guard<std::mutex> lock(load_mutex);
        load_locked("");
    });
    return loaded_api.load();
}

void check_cublas(int status, const char* what) {
    if (status != 0)
        throw std::runtime_error(std::string("cuBLAS error in ") + what + ": status " +
                                 std::to_string(status));
}

// The handles, one per (device, stream), each with its own workspace, kept until
// cublas_release(stream) (a captured graph holds the workspace's address: it must
// live as long as the stream's graphs, whichever thread made or replays them) or
// the end of the process. One call at a time on a handle (its mutex).
struct StreamHandle {
    std::mutex use;
    cublas_handle handle = nullptr;
    void* workspace = nullptr;
};

using HandleKey = std::pair<int, cudaStream_t>;
std::mutex registry_mutex;
// Never destroyed: a thread may still use it while the process exits.
auto& registry = *new std::map<HandleKey, std::unique_ptr<StreamHandle>>;

// Whether work enqueued on `stream` now would be captured (then nothing may be
// allocated); an answer that cannot be had counts as yes.
bool capturing(cudaStream_t stream) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
        cudaGetLastError();
        return true;
    }
    return status != cudaStreamCaptureStatusNone;
}

// The handle of (this device, stream), made when there is none (cudaMalloc,
// cublasCreate): not while the stream is being captured, which cannot allocate
// (std::runtime_error: a capture that fails runs uncaptured in the engine). A
// handle cuBLAS cannot make turns cuBLAS off (null: the own kernel runs).
StreamHandle* stream_handle(const CublasApi* api, cudaStream_t stream) {
    int device = 0;
    check(cudaGetDevice(&device), "gemm: cudaGetDevice");
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto found = registry.find(HandleKey(device, stream));
    if (found != registry.end()) return found->second.get();
    if (capturing(stream))
        throw std::runtime_error(
            "gemm: cuBLAS has no handle for this stream yet, and a stream being captured cannot "
            "make one: call cublas_prepare(stream) before capturing");
    auto made = std::make_unique<StreamHandle>();
    check(cudaMalloc(&made->workspace, workspace_bytes), "gemm: cudaMalloc (cuBLAS workspace)");
    int status = api->create(&made->handle);
    if (status == 0) status = api->set_math_mode(made->handle, 0);  // CUBLAS_DEFAULT_MATH: no TF32
    if (status != 0) {  // a cuBLAS that loads but cannot work here: the own kernels from now on
        if (made->handle != nullptr) api->destroy(made->handle);
        cudaFree(made->workspace);
        cublas_on.store(false);
        return nullptr;
    }
    StreamHandle* handle = made.get();
    registry.emplace(HandleKey(device, stream), std::move(made));
    return handle;
}

bool fits_int(index x) { return x >= 0 && x <= 0x7fffffff; }

template <typename T>
void gemm_cublas(const CublasApi* api, StreamHandle* h, cudaStream_t stream, Op op_a, Op op_b,
                 index m, index n, index k, const T* a, index lda, const T* b, index ldb, T beta,
                 T* c, index ldc) {
    std::lock_guard<std::mutex> lock(h->use);
    // cublasSetStream resets the workspace to cuBLAS's pool: set ours after it, every call.
    check_cublas(api->set_stream(h->handle, stream), "cublasSetStream");
    check_cublas(api->set_workspace(h->handle, h->workspace, workspace_bytes), "cublasSetWorkspace");
    const T one = T(1);
    const int trans_first = op_b == Op::T ? 1 : 0, trans_second = op_a == Op::T ? 1 : 0;
    int status;
    if constexpr (sizeof(T) == 4)
        status = api->sgemm(h->handle, trans_first, trans_second, int(n), int(m), int(k), &one, b,
                            int(ldb), a, int(lda), &beta, c, int(ldc));
    else
        status = api->dgemm(h->handle, trans_first, trans_second, int(n), int(m), int(k), &one, b,
                            int(ldb), a, int(lda), &beta, c, int(ldc));
    check_cublas(status, sizeof(T) == 4 ? "cublasSgemm" : "cublasDgemm");
}

}  // namespace

std::string cublas_load(const std::string& path) {
    std::lock_guard<std::mutex> lock(load_mutex);
    return load_locked(path);
}

void use_cublas(bool on) { cublas_on.store(on); }

bool cublas_active() { return active_api() != nullptr; }

void cublas_prepare(cudaStream_t stream) {
    if (const CublasApi* api = active_api()) stream_handle(api, stream);
}

void cublas_release(cudaStream_t stream) {
    const CublasApi* api = loaded_api.load();
    if (api == nullptr) return;
    int device = 0;
    check(cudaGetDevice(&device), "cublas_release: cudaGetDevice");
    std::unique_ptr<StreamHandle> handle;
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        auto found = registry.find(HandleKey(device, stream));
        if (found == registry.end()) return;
        handle = std::move(found->second);
        registry.erase(found);
    }
    std::lock_guard<std::mutex> in_use(handle->use);  // a call still under way finishes first
    check(cudaStreamSynchronize(stream), "cublas_release: cudaStreamSynchronize");
    api->destroy(handle->handle);
    check(cudaFree(handle->workspace), "cublas_release: cudaFree");
}

template <typename T>
void gemm(cudaStream_t stream, Op op_a, Op op_b, index m, index n, index k, const T* a, index lda,
          const T* b, index ldb, T beta, T* c, index ldc, const Epilogue<T>& epilogue) {
    require(m >= 0 && n >= 0 && k >= 0, "gemm: sizes must be non-negative");
    require(beta == T(0) || beta == T(1), "gemm: beta must be 0 or 1");
    if (m == 0 || n == 0) return;
    const CublasApi* api = active_api();
    const bool large = double(m) * double(n) * double(k) >= cublas_min_work;
    const bool ints = fits_int(m) && fits_int(n) && fits_int(k) && fits_int(lda) &&
                      fits_int(ldb) && fits_int(ldc);
    StreamHandle* handle = api != nullptr && large && ints ? stream_handle(api, stream) : nullptr;
    if (handle != nullptr) {
        gemm_cublas(api, handle, stream, op_a, op_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        if (needs_epilogue(epilogue.activation, epilogue.bias, epilogue.z_out)) {
            epilogue_kernel<T><<<blocks_for(m * n, 256), 256, 0, stream>>>(m, n, c, ldc, epilogue);
            check_launch("gemm (epilogue)");
        }
        return;
    }
    gemm_own(stream, op_a, op_b, m, n, k, a, lda, b, ldb, beta, c, ldc, epilogue);
}

// The own kernel whatever cuBLAS (for the tests and the fused path's comparisons).
template <typename T>
void gemm_own_kernel(cudaStream_t stream, Op op_a, Op op_b, index m, index n, index k, const T* a,
                     index lda, const T* b, index ldb, T beta, T* c, index ldc,
                     const Epilogue<T>& epilogue) {
    require(m >= 0 && n >= 0 && k >= 0, "gemm: sizes must be non-negative");
    require(beta == T(0) || beta == T(1), "gemm: beta must be 0 or 1");
    if (m == 0 || n == 0) return;
    gemm_own(stream, op_a, op_b, m, n, k, a, lda, b, ldb, beta, c, ldc, epilogue);
}

#define FASTMLP_INSTANTIATE(T)                                                                  \
    template void gemm<T>(cudaStream_t, Op, Op, index, index, index, const T*, index, const T*, \
                          index, T, T*, index, const Epilogue<T>&);                             \
    template void gemm_own_kernel<T>(cudaStream_t, Op, Op, index, index, index, const T*, index, \
                                     const T*, index, T, T*, index, const Epilogue<T>&);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp::cuda

// fused.cu — the fused path (see fused.cuh): one block runs whole training steps.
//
// Shared memory of a step of B rows, in T: the gathered input (B × sizes[0]); per
// layer its output A_l (B × sizes[l+1]) and, when its activation is not linear,
// its pre-activation Z_l; two delta buffers (B × the widest layer); then B row
// indices. Phases, each ended by a barrier:
//   rows      the batch's row indices (the epoch's order) and the gathered X
//   forward   per layer, a thread per output element: z = Σ_k a_k w_ok + b_o, a = f(z)
//   loss      Σ w (weighted), then a thread per row: its loss (double) and dL/dA
//             with the row's factor (loss.cpp's rule); the batch's sums by a fixed tree
//   backward  per layer, last first: dZ = dA ⊙ f'(Z); a thread per gradient value
//             (dW_ok = Σ_r dz_ro a_rk, db_o = Σ_r dz_ro, rows in order); dA = dZ · W
//   update    Σ g² (fixed tree), the norm, clip, schedule, then the rule as the
//             CPU's optimizer_update: SGD checks every new value first (one not
//             finite: nothing changes, the fit stops); Adam, AdamW and LAMB (its
//             per-tensor norms first) keep the old value of a parameter whose new
//             one is not finite, and the fit stops after that update.
#include <cfloat>
#include <mutex>

#include "device.cuh"
#include "fused.cuh"
#include "math.cuh"

namespace fastmlp::cuda {
namespace {

// Σ v over the block, by a fixed tree (warp shuffles, then the warps' sums): the
// same bits whatever the timing. Every thread calls it; every thread gets the sum.
__device__ double block_sum(double v, double* red) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // red's last use is over
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int warps = int(blockDim.x >> 5);
        v = lane < warps ? red[lane] : 0.0;
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) red[32] = v;
    }
    __syncthreads();
    return red[32];
}

template <typename T>
__device__ T largest() {
    return sizeof(T) == 4 ? T(FLT_MAX) : T(DBL_MAX);
}

// Where the shared arrays of a step of `batch` rows start (in T), and how many T in all.
template <typename T>
struct Layout {
    index act[fused_max_layers + 1];  // act[0]: the gathered input
    index z[fused_max_layers];        // -1: the layer's output is its pre-activation
    index d0 = 0, d1 = 0, rows = 0, total = 0;
};

template <typename T>
__host__ __device__ Layout<T> layout(const FusedArgs<T>& a, index batch) {
    Layout<T> l;
    index off = 0, widest = 0;
    l.act[0] = off;
    off += batch * a.sizes[0];
    for (int i = 0; i < a.layers; ++i) {
        const index width = a.sizes[i + 1];
        widest = width > widest ? width : widest;
        l.act[i + 1] = off;
        off += batch * width;
        if (a.activation[i] != Activation::linear) {
            l.z[i] = off;
            off += batch * width;
        } else {
            l.z[i] = -1;
        }
    }
    l.d0 = off;
    off += batch * widest;
    l.d1 = off;
    off += batch * widest;
    l.rows = off;  // B indices (int32), counted in T: ⌈B · 4 / sizeof(T)⌉
    off += (batch * 4 + index(sizeof(T)) - 1) / index(sizeof(T));
    l.total = off;
    return l;
}

template <typename T>
__global__ void __launch_bounds__(fused_threads) fused_kernel(const FusedArgs<T> a) {
    extern __shared__ double shared_raw[];  // double: aligned for either T
    __shared__ double red[33];
    T* sm = reinterpret_cast<T*>(shared_raw);
    const Layout<T> lay = layout(a, a.batch);
    std::int32_t* rowid = reinterpret_cast<std::int32_t*>(sm + lay.rows);
    const int tid = int(threadIdx.x), nt = int(blockDim.x);
    const int L = a.layers;
    StepState* st = a.state;
    const index in0 = a.sizes[0], out_width = a.sizes[L];

    for (std::int64_t it = 0; it < a.steps; ++it) {
        __syncthreads();  // the last step's writes (state, parameters) are seen by all
        if (st->status != step_ok) return;
        const std::int64_t step = st->step;
        const std::int64_t t = st->t;
        const index epoch = index(step / a.steps_per_epoch), k = index(step % a.steps_per_epoch);
        const index first = k * a.batch;
        const index rows = a.n - first < a.batch ? a.n - first : a.batch;

        // ---- rows and the gathered input ----
        for (index r = tid; r < rows; r += nt)
            rowid[r] = a.order != nullptr ? a.order[epoch * a.n + first + r] : std::int32_t(first + r);
        __syncthreads();
        {
            T* x0 = sm + lay.act[0];
            for (index i = tid; i < rows * in0; i += nt) {
                const index r = i / in0, c = i - r * in0;
                x0[i] = a.x[index(rowid[r]) * in0 + c];
            }
        }
        __syncthreads();

        // ---- forward ----
        for (int l = 0; l < L; ++l) {
            const index I = a.sizes[l], O = a.sizes[l + 1];
            const T* in = sm + lay.act[l];
            T* out = sm + lay.act[l + 1];
            T* z = lay.z[l] >= 0 ? sm + lay.z[l] : nullptr;
            const T* W = a.params + a.weight_offset[l];
            const T* b = a.params + a.bias_offset[l];
            const Activation f = a.activation[l];
            for (index i = tid; i < rows * O; i += nt) {
                const index r = i / O, o = i - r * O;
                const T* ar = in + r * I;
                const T* wo = W + o * I;
                T acc = T(0);
                for (index q = 0; q < I; ++q) acc += ar[q] * wo[q];
                const T zz = acc + b[o];
                if (z != nullptr) z[i] = zz;
                out[i] = activate(f, zz);
            }
            __syncthreads();
        }

        // ---- loss: its sums and dL/dA of the output ----
        const T* pred = sm + lay.act[L];
        T* d = sm + lay.d0;
        T* d_next = sm + lay.d1;
        double batch_weight = double(rows);
        if (a.weight != nullptr) {
            double local = 0;
            for (index r = tid; r < rows; r += nt) local += double(a.weight[rowid[r]]);
            batch_weight = block_sum(local, red);
        }
        const double normalizer = normalizer_of(a.loss, batch_weight, out_width);
        const double inv = gradient_factor(a.loss, normalizer);
        double loss_local = 0, correct_local = 0;
        for (index r = tid; r < rows; r += nt) {
            const index row = rowid[r];
            const T* p = pred + r * out_width;
            const T* tg = a.y + row * out_width;
            T* g = d + r * out_width;
            const double w = a.weight != nullptr ? double(a.weight[row]) : 1.0;
            const T scale = a.weight != nullptr ? T(w * inv) : T(inv);
            const double row_loss = loss_row(a.loss, p, tg, g, out_width, a.huber_delta, scale, w,
                                             a.count_correct ? &correct_local : nullptr);
            loss_local += a.weight != nullptr ? row_loss * w : row_loss;
        }
        const double loss_sum = block_sum(loss_local, red);
        const double correct = a.count_correct ? block_sum(correct_local, red) : 0.0;
        const double mean = normalizer > 0 ? loss_sum / normalizer : 0.0;
        if (!(fabs(mean) <= double(largest<T>()))) {
            if (tid == 0) {
                st->status = step_bad_loss;
                st->failed_step = step;
            }
            return;
        }

        // ---- backward ----
        for (int l = L - 1; l >= 0; --l) {
            const index I = a.sizes[l], O = a.sizes[l + 1];
            const Activation f = a.activation[l];
            const T* A = sm + lay.act[l];
            if (f != Activation::linear) {
                const T* z = sm + lay.z[l];
                const T* out = sm + lay.act[l + 1];
                for (index i = tid; i < rows * O; i += nt) d[i] *= activate_grad(f, z[i], out[i]);
                __syncthreads();
            }
            T* gW = a.grads + a.weight_offset[l];
            T* gb = a.grads + a.bias_offset[l];
            for (index i = tid; i < O * I + O; i += nt) {
                T acc = T(0);
                if (i < O * I) {
                    const index o = i / I, q = i - o * I;
                    for (index r = 0; r < rows; ++r) acc += d[r * O + o] * A[r * I + q];
                    gW[i] = acc;
                } else {
                    const index o = i - O * I;
                    for (index r = 0; r < rows; ++r) acc += d[r * O + o];
                    gb[o] = acc;
                }
            }
            if (l > 0) {
                const T* W = a.params + a.weight_offset[l];
                for (index i = tid; i < rows * I; i += nt) {
                    const index r = i / I, q = i - r * I;
                    T acc = T(0);
                    for (index o = 0; o < O; ++o) acc += d[r * O + o] * W[o * I + q];
                    d_next[i] = acc;
                }
            }
            __syncthreads();
            T* swap = d;
            d = d_next;
            d_next = swap;
        }

        // ---- update ----
        const OptimizerConfig& c = a.config;
        const bool clip_on = c.clip_value > 0;
        const T clip = T(c.clip_value);
        double sq_local = 0;
        for (index i = tid; i < a.n_params; i += nt) {
            T g = a.grads[i];
            if (clip_on) g = g < -clip ? -clip : (g > clip ? clip : g);
            sq_local += double(g) * double(g);
        }
        const double grad_norm = sqrt(block_sum(sq_local, red));
        if (!isfinite(grad_norm)) {
            if (tid == 0) {
                st->status = step_bad_gradient;
                st->failed_step = step;
            }
            return;
        }
        StepState s;
        s.t = t;
        s.lr = c.lr * schedule_factor(a.schedule, t);
        s.scale = c.clip_norm > 0 ? fmin(1.0, c.clip_norm / (grad_norm + 1e-6)) : 1.0;
        s.bias1 = 1.0 - pow(c.beta1, double(t + 1));
        s.bias2 = 1.0 - pow(c.beta2, double(t + 1));
        const Rule<T> rule = make_rule<T>(c, s);
        T zero1 = T(0), zero2 = T(0);
        double bad_local = 0;
        if (c.kind == OptimizerKind::sgd) {
            // SGD as the CPU's: the new values checked first; one not finite and nothing
            // changes (t stays), the fit stops.
            for (index i = tid; i < a.n_params; i += nt) {
                T m = a.s1 != nullptr ? a.s1[i] : zero1;
                const T p = rule_update(rule, a.params[i], a.grads[i], m, zero2);
                bad_local += isfinite(p) ? 0.0 : 1.0;
            }
            if (block_sum(bad_local, red) > 0) {
                if (tid == 0) {
                    st->status = step_bad_update;
                    st->failed_step = step;
                }
                return;
            }
            for (index i = tid; i < a.n_params; i += nt) {
                T m = a.s1 != nullptr ? a.s1[i] : zero1;
                T v = zero2;
                a.params[i] = rule_update(rule, a.params[i], a.grads[i], m, v);
                if (a.s1 != nullptr) a.s1[i] = m;
            }
        } else if (c.kind != OptimizerKind::lamb) {
            // Adam, AdamW as the CPU's: m and v move; a parameter whose new value is not
            // finite keeps its value, and the fit stops after this update.
            for (index i = tid; i < a.n_params; i += nt) {
                T m = a.s1[i], v = a.s2[i];
                const T p = rule_update(rule, a.params[i], a.grads[i], m, v);
                a.s1[i] = m;
                a.s2[i] = v;
                if (isfinite(p))
                    a.params[i] = p;
                else
                    bad_local += 1.0;
            }
        } else {
            // LAMB as the CPU's, tensor by tensor (each layer's W, then its b): m and v move
            // and the norms of p and of the direction u are summed; then p −= (lr · trust) · u,
            // u again from the new m and v, a non-finite new value keeping the old one.
            for (int seg = 0; seg < 2 * L; ++seg) {
                const int l = seg / 2;
                const index begin = seg % 2 == 0 ? a.weight_offset[l] : a.bias_offset[l];
                const index size = seg % 2 == 0 ? a.sizes[l] * a.sizes[l + 1] : a.sizes[l + 1];
                double p_local = 0, u_local = 0;
                for (index i = begin + tid; i < begin + size; i += nt) {
                    T m = a.s1[i], v = a.s2[i];
                    const T p = a.params[i];
                    const T u = lamb_direction(rule, p, a.grads[i], m, v);
                    a.s1[i] = m;
                    a.s2[i] = v;
                    p_local += double(p) * double(p);
                    u_local += double(u) * double(u);
                }
                const double p_norm = sqrt(block_sum(p_local, red));
                const double u_norm = sqrt(block_sum(u_local, red));
                const double trust = p_norm > 0 && u_norm > 0 ? p_norm / u_norm : 1.0;
                const T lr_trust = T(s.lr * trust);
                // Each thread reads back only the m, v it wrote (same i): no barrier needed.
                for (index i = begin + tid; i < begin + size; i += nt) {
                    const T p = a.params[i];
                    const T u = (a.s1[i] * rule.inv_bc1) / (sqrt(a.s2[i] * rule.inv_bc2) + rule.eps) + rule.wd * p;
                    const T updated = p - lr_trust * u;
                    if (isfinite(updated))
                        a.params[i] = updated;
                    else
                        bad_local += 1.0;
                }
            }
        }
        const bool kept = c.kind != OptimizerKind::sgd && block_sum(bad_local, red) > 0;
        __syncthreads();
        if (tid == 0) {
            StepFigures& fig = a.figures[step];
            fig.loss_sum = loss_sum;
            fig.correct = correct;
            fig.normalizer = normalizer;
            fig.grad_norm = grad_norm;
            fig.lr = s.lr;
            st->grad_norm = grad_norm;
            st->scale = s.scale;
            st->lr = s.lr;
            st->bias1 = s.bias1;
            st->bias2 = s.bias2;
            st->t = t + 1;
            st->step = step + 1;
            if (kept) {  // some parameters kept their values: this update counts, the fit stops
                st->status = step_bad_update;
                st->failed_step = step;
            }
        }
    }
}

}  // namespace

template <typename T>
std::size_t fused_shared_bytes(const FusedArgs<T>& a, index batch) {
    return std::size_t(layout(a, batch).total) * sizeof(T);
}

template <typename T>
bool fused_fits(const FusedArgs<T>& a, index batch, std::size_t max_shared) {
    if (a.layers < 1 || a.layers > fused_max_layers) return false;
    // Room for the static reduction array beside the dynamic shared memory.
    if (fused_shared_bytes(a, batch) + 1024 > max_shared) return false;
    // One multiprocessor: worth it while a step is small. Its multiply-adds, forward
    // and backward (about 3× the forward's).
    double macs = 0;
    for (int l = 0; l < a.layers; ++l) macs += 3.0 * double(batch) * double(a.sizes[l]) * double(a.sizes[l + 1]);
    return macs <= double(1 << 21);
}

template <typename T>
void fused_steps(cudaStream_t stream, const FusedArgs<T>& a) {
    if (a.steps <= 0) return;
    const std::size_t bytes = fused_shared_bytes(a, a.batch);
    // The kernel's dynamic shared memory limit (a process-wide attribute) is only ever
    // raised, so that a network on another thread never lowers it under a launch.
    static std::mutex mutex;
    static std::size_t raised = 48 * 1024;
    {
        std::lock_guard<std::mutex> lock(mutex);
        if (bytes > raised) {
            check(cudaFuncSetAttribute(fused_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                  "cudaFuncSetAttribute (fused)");
            raised = bytes;
        }
    }
    fused_kernel<T><<<1, fused_threads, bytes, stream>>>(a);
    check_launch("fused_kernel");
}

template std::size_t fused_shared_bytes<float>(const FusedArgs<float>&, index);
template std::size_t fused_shared_bytes<double>(const FusedArgs<double>&, index);
template bool fused_fits<float>(const FusedArgs<float>&, index, std::size_t);
template bool fused_fits<double>(const FusedArgs<double>&, index, std::size_t);
template void fused_steps<float>(cudaStream_t, const FusedArgs<float>&);
template void fused_steps<double>(cudaStream_t, const FusedArgs<double>&);

}  // namespace fastmlp::cuda

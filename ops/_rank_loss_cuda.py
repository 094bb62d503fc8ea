"""CUDA kernels (CuPy RawModule) for PairWiseLoss / PairWiseLossGradient (reference §6).

Semantics are those of the CPU kernel: inside each session, every pair whose labels differ by
at least FLT_EPSILON (float32 difference, as C++ computes it) contributes logLogit(x_lo - x_hi)
to the forward sum and +-dY[s] * sigmoid(x_lo - x_hi) to the gradient; results are divided by
the session's pair count (0 for a session without pairs).

Design. Items are cut into row tiles of T threads (T = 64, 128 or 256, from the mean session
length) that never straddle a session, and each session's partner range is cut into K chunks
(K > 1 only when there are too few tiles to fill the GPU, e.g. one huge session). A block
(tile, chunk) stages its partners in shared memory, T at a time, and each thread loops over
them for its own item: the forward takes partners j < i (each pair once, as Caffe2 does), the
gradient takes every j != i (O(L) per item, so no scatter is needed). Per-pair math is float32
(expf, log1pf, 1/(1+expf)), within a few ulp; every sum is float64. When a session fits one
block and K == 1 the block finishes it (one launch for a small session); otherwise blocks write
float64 partials to fixed slots, a per-session kernel reduces them (Y, or the pair count), and
the gradient's per-item kernel adds its K partials and scales by dY[s] / numPairs.

Determinism: there are no atomics. Every partial is produced by one fixed thread in a fixed
order (partners ascending) and every reduction is a fixed loop or a fixed tree, while T and K
depend only on (N, S, device), so repeated runs on one device give bit-identical results.

CuPy is imported lazily (importing this module never imports it); the module is compiled on
first use on each device and cached. Inputs are assumed validated by the op wrapper: x and
label float32 (N,), lengths non-negative integers summing to N (or None: one session), dY
float32 (S,) with S = 1 without lengths.
"""
from __future__ import annotations

import threading
from typing import Any, NamedTuple, Optional

import numpy as np

#: FLT_EPSILON and logf(FLT_EPSILON) (the logLogit cut-off) as float32 values.
FLT_EPS = float(np.float32(2.0 ** -23))
K_MIN_LOG = float(np.float32(-15.9423847198486328125))

_MAX_TILE = 256
_SESSION_THREADS = 256
_FINALIZE_THREADS = 256
_OFFSETS_THREADS = 1024
_MIN_CHUNK = 256          # a chunk of partners is never made smaller than this by splitting
_MAX_CHUNKS = 65535       # gridDim.y limit

CUDA_SOURCE = r"""
// c2lite PairWiseLoss kernels. No atomics; every reduction has a fixed order.
typedef long long i64;

#define PWL_MAX_T 256
#define PWL_EPS 1.1920928955078125e-07f          /* FLT_EPSILON = 2^-23 */
#define PWL_KMIN (-15.9423847198486328125f)      /* logf(FLT_EPSILON) as a float */

__device__ __forceinline__ i64 pwl_min(i64 a, i64 b) { return a < b ? a : b; }

// Largest s in [0, S-1] with a[s] <= v, for non-decreasing a with a[0] <= v.
__device__ __forceinline__ i64 pwl_find(const i64* __restrict__ a, i64 S, i64 v)
{
    i64 lo = 0, hi = S - 1;
    while (lo < hi) {
        const i64 mid = lo + (hi - lo + 1) / 2;
        if (a[mid] <= v) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// Fixed-tree block sums (blockDim.x a power of two, <= PWL_MAX_T); every thread gets the total.
template <typename T>
__device__ __forceinline__ T pwl_block_sum(T v, T* red)
{
    const int t = threadIdx.x;
    red[t] = v;
    __syncthreads();
    for (int w = blockDim.x >> 1; w > 0; w >>= 1) {
        if (t < w) red[t] += red[t + w];
        __syncthreads();
    }
    const T r = red[0];
    __syncthreads();
    return r;
}

// Session offsets and tile offsets (exclusive scans, S + 1 entries each). One block of 1024.
extern "C" __global__ void __launch_bounds__(1024)
pwl_offsets(const i64* __restrict__ lengths, i64 S, int T,
            i64* __restrict__ off, i64* __restrict__ toff)
{
    __shared__ i64 sa[1024];
    __shared__ i64 st[1024];
    const int t = threadIdx.x;
    const i64 per = (S + 1023) / 1024;
    const i64 beg = pwl_min((i64)t * per, S);
    const i64 end = pwl_min(beg + per, S);
    i64 la = 0, lt = 0;
    for (i64 s = beg; s < end; ++s) {
        const i64 l = lengths[s];
        la += l;
        lt += (l + T - 1) / T;
    }
    sa[t] = la;
    st[t] = lt;
    __syncthreads();
    for (int d = 1; d < 1024; d <<= 1) {
        const i64 va = t >= d ? sa[t - d] : 0;
        const i64 vt = t >= d ? st[t - d] : 0;
        __syncthreads();
        sa[t] += va;
        st[t] += vt;
        __syncthreads();
    }
    i64 ea = sa[t] - la, et = st[t] - lt;
    for (i64 s = beg; s < end; ++s) {
        const i64 l = lengths[s];
        off[s] = ea;
        toff[s] = et;
        ea += l;
        et += (l + T - 1) / T;
    }
    if (t == 1023) {
        off[S] = sa[t];
        toff[S] = st[t];
    }
}

// Block (tile b, chunk k): each thread sums, for its item i, the pair terms with the partners
// of chunk k (forward: j < i; gradient: j != i), in ascending j, into a double.
// single != 0: one session [0, n) and off / toff are not read.
template <bool GRAD>
__device__ __forceinline__ void pwl_pairs(
    const float* __restrict__ x, const float* __restrict__ label,
    const i64* __restrict__ off, const i64* __restrict__ toff,
    i64 n, i64 S, int single, int K, const float* __restrict__ dy,
    double* __restrict__ bsum, i64* __restrict__ bcnt, double* __restrict__ gpart,
    float* __restrict__ out)
{
    __shared__ float2 tile[PWL_MAX_T];
    __shared__ double red_d[PWL_MAX_T];
    __shared__ i64 red_c[PWL_MAX_T];

    const int T = blockDim.x;
    const int t = threadIdx.x;
    const i64 b = blockIdx.x;
    const int k = blockIdx.y;
    const i64 NB = gridDim.x;

    i64 s, sb, se, r;
    if (single) {
        if (b * T >= n) return;                 // whole block: uniform
        s = 0; sb = 0; se = n; r = b;
    } else {
        if (b >= toff[S]) return;               // whole block: uniform
        s = pwl_find(toff, S, b);
        sb = off[s]; se = off[s + 1]; r = b - toff[s];
    }
    const i64 L = se - sb;
    const i64 row0 = sb + r * T;
    const i64 i = row0 + t;
    const bool valid = i < se;
    const i64 row_end = pwl_min(row0 + T, se);
    const i64 C = (L + K - 1) / K;
    const i64 j0 = sb + (i64)k * C;
    i64 j1 = pwl_min(j0 + C, se);
    if (!GRAD) j1 = pwl_min(j1, row_end - 1);  // partners j < i <= row_end - 1

    const float xi = valid ? x[i] : 0.0f;
    const float li = valid ? label[i] : 0.0f;
    double acc = 0.0;
    int cnt = 0;

    for (i64 t0 = j0; t0 < j1; t0 += T) {
        const int m = (int)pwl_min((i64)T, j1 - t0);
        if (t < m) tile[t] = make_float2(x[t0 + t], label[t0 + t]);
        __syncthreads();
        if (valid) {
            const i64 rel = i - t0;             // this item's slot in the tile, clamped
            const int self = rel < 0 ? -1 : (rel > T ? T : (int)rel);
            if (!GRAD) {
                const int stop = m < self ? m : self;
                for (int jj = 0; jj < stop; ++jj) {
                    const float2 p = tile[jj];
                    const bool hi = li > p.y;  // Caffe2's sign for the pair (i, j < i)
                    const float z = hi ? (p.x - xi) : (xi - p.x);
                    const float sp = log1pf(expf(z));
                    const float term = z < PWL_KMIN ? 0.0f : (z > -PWL_KMIN ? z : sp);
                    if (!(fabsf(li - p.y) < PWL_EPS)) {
                        acc += (double)term;
                        ++cnt;
                    }
                }
            } else {
                for (int jj = 0; jj < m; ++jj) {
                    const float2 p = tile[jj];
                    // The higher-labelled member as Caffe2 decides it for (later, earlier).
                    const bool hi = jj < self ? (li > p.y) : !(p.y > li);
                    const float z = hi ? (p.x - xi) : (xi - p.x);
                    const float sg = 1.0f / (1.0f + expf(-z));
                    if (jj != self && !(fabsf(li - p.y) < PWL_EPS)) {
                        acc += hi ? -(double)sg : (double)sg;
                        ++cnt;
                    }
                }
            }
        }
        __syncthreads();
    }

    const bool direct = (K == 1) && (L <= T);  // this block holds the whole session
    const i64 c = pwl_block_sum((i64)cnt, red_c);
    if (!GRAD) {
        const double tot = pwl_block_sum(acc, red_d);
        if (t == 0) {
            if (direct) {
                out[s] = c > 0 ? (float)(tot / (double)c) : 0.0f;
            } else {
                bsum[(i64)k * NB + b] = tot;
                bcnt[(i64)k * NB + b] = c;
            }
        }
    } else {
        if (direct) {
            const i64 np = c / 2;
            if (valid) out[i] = np > 0 ? (float)((double)dy[s] * acc / (double)np) : 0.0f;
        } else {
            if (valid) gpart[(i64)k * n + i] = acc;
            if (t == 0) bcnt[(i64)k * NB + b] = c;
        }
    }
}

extern "C" __global__ void __launch_bounds__(PWL_MAX_T)
pwl_pairs_fwd(const float* __restrict__ x, const float* __restrict__ label,
              const i64* __restrict__ off, const i64* __restrict__ toff,
              i64 n, i64 S, int single, int K, const float* __restrict__ dy,
              double* __restrict__ bsum, i64* __restrict__ bcnt, double* __restrict__ gpart,
              float* __restrict__ out)
{
    pwl_pairs<false>(x, label, off, toff, n, S, single, K, dy, bsum, bcnt, gpart, out);
}

extern "C" __global__ void __launch_bounds__(PWL_MAX_T)
pwl_pairs_grad(const float* __restrict__ x, const float* __restrict__ label,
               const i64* __restrict__ off, const i64* __restrict__ toff,
               i64 n, i64 S, int single, int K, const float* __restrict__ dy,
               double* __restrict__ bsum, i64* __restrict__ bcnt, double* __restrict__ gpart,
               float* __restrict__ out)
{
    pwl_pairs<true>(x, label, off, toff, n, S, single, K, dy, bsum, bcnt, gpart, out);
}

// One block (256 threads) per session: reduce the session's K x R block partials in a fixed
// order. Forward: Y[s]. Gradient: numPairs[s]. Sessions finished by pwl_pairs are skipped.
template <bool GRAD>
__device__ __forceinline__ void pwl_session(
    const i64* __restrict__ off, const i64* __restrict__ toff, i64 n, int single, int K,
    int T, i64 NB, const double* __restrict__ bsum, const i64* __restrict__ bcnt,
    float* __restrict__ y, i64* __restrict__ npairs)
{
    __shared__ double red_d[256];
    __shared__ i64 red_c[256];
    const i64 s = blockIdx.x;
    const i64 L = single ? n : off[s + 1] - off[s];
    const i64 R = single ? (n + T - 1) / T : toff[s + 1] - toff[s];
    const i64 tb = single ? 0 : toff[s];
    if (K == 1 && L >= 1 && L <= T) return;    // whole block: uniform
    double a = 0.0;
    i64 c = 0;
    const i64 RK = R * K;
    for (i64 e = threadIdx.x; e < RK; e += blockDim.x) {
        const i64 kk = e / R;
        const i64 idx = kk * NB + tb + (e - kk * R);
        if (!GRAD) a += bsum[idx];
        c += bcnt[idx];
    }
    const i64 ctot = pwl_block_sum(c, red_c);
    if (!GRAD) {
        const double atot = pwl_block_sum(a, red_d);
        if (threadIdx.x == 0) y[s] = ctot > 0 ? (float)(atot / (double)ctot) : 0.0f;
    } else {
        if (threadIdx.x == 0) npairs[s] = ctot / 2;
    }
}

extern "C" __global__ void __launch_bounds__(256)
pwl_session_fwd(const i64* __restrict__ off, const i64* __restrict__ toff, i64 n, int single,
                int K, int T, i64 NB, const double* __restrict__ bsum,
                const i64* __restrict__ bcnt, float* __restrict__ y, i64* __restrict__ npairs)
{
    pwl_session<false>(off, toff, n, single, K, T, NB, bsum, bcnt, y, npairs);
}

extern "C" __global__ void __launch_bounds__(256)
pwl_session_grad(const i64* __restrict__ off, const i64* __restrict__ toff, i64 n, int single,
                 int K, int T, i64 NB, const double* __restrict__ bsum,
                 const i64* __restrict__ bcnt, float* __restrict__ y, i64* __restrict__ npairs)
{
    pwl_session<true>(off, toff, n, single, K, T, NB, bsum, bcnt, y, npairs);
}

// Gradient, one thread per item of a session not finished by pwl_pairs_grad:
// dX[i] = dY[s] * (sum over k of gpart[k][i], k ascending) / numPairs[s].
extern "C" __global__ void __launch_bounds__(256)
pwl_grad_finalize(const i64* __restrict__ off, i64 n, i64 S, int single, int K, int T,
                  const double* __restrict__ gpart, const i64* __restrict__ npairs,
                  const float* __restrict__ dy, float* __restrict__ dx)
{
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const i64 s = single ? 0 : pwl_find(off, S, i);
    const i64 L = single ? n : off[s + 1] - off[s];
    if (K == 1 && L <= T) return;               // written by pwl_pairs_grad
    double g = 0.0;
    for (int k = 0; k < K; ++k) g += gpart[(i64)k * n + i];
    const i64 np = npairs[s];
    dx[i] = np > 0 ? (float)((double)dy[s] * g / (double)np) : 0.0f;
}
"""

_KERNEL_NAMES = ("pwl_offsets", "pwl_pairs_fwd", "pwl_pairs_grad", "pwl_session_fwd",
                 "pwl_session_grad", "pwl_grad_finalize")
_COMPILE_OPTIONS: tuple = ()


class Plan(NamedTuple):
    """Launch shape of one call: tile T (threads per block), chunks K, grid width NB."""
    tile: int
    chunks: int
    n_blocks: int
    single: bool      # one session: no offsets pass, off/toff not read
    direct_only: bool  # the pair kernel finishes everything: no later launch


def plan_launch(n: int, n_sessions: int, sm_count: int = 132, blocks_per_sm: Optional[dict] = None,
                waves: int = 4, tile: Optional[int] = None, chunks: Optional[int] = None) -> Plan:
    """Choose T and K for N items in S sessions (S >= 1, N >= 1); pure Python, no device.

    T is the smallest of 64/128/256 covering the mean session length. K splits each session's
    partners so that the grid holds about ``waves`` full waves of resident blocks, but never into
    chunks shorter than 256 partners. ``blocks_per_sm`` maps T to resident blocks per SM.
    """
    single = n_sessions <= 1
    if tile is None:
        mean = n / max(n_sessions, 1)
        tile = 64 if mean <= 64 else (128 if mean <= 128 else _MAX_TILE)
    if tile not in (32, 64, 128, 256):
        raise ValueError(f"tile must be 32, 64, 128 or 256, got {tile}")
    rows = -(-n // tile)
    n_blocks = rows if single else rows + min(n_sessions, n)
    if chunks is None:
        per_sm = (blocks_per_sm or {}).get(tile) or max(1, min(32, 2048 // tile))
        chunks = (waves * sm_count * per_sm) // rows
        longest = n  # an upper bound on any session's length
        chunks = max(1, min(chunks, -(-longest // _MIN_CHUNK), _MAX_CHUNKS))
    if not 1 <= chunks <= _MAX_CHUNKS:
        raise ValueError(f"chunks must be in [1, {_MAX_CHUNKS}], got {chunks}")
    direct_only = single and chunks == 1 and n <= tile
    return Plan(tile, chunks, n_blocks, single, direct_only)


class _DeviceKernels:
    """The compiled functions of one device plus what the planner needs to know about it."""

    def __init__(self, cp: Any, device_id: int) -> None:
        module = cp.RawModule(code=CUDA_SOURCE, options=_COMPILE_OPTIONS)
        self.fn = {name: module.get_function(name) for name in _KERNEL_NAMES}
        props = cp.cuda.runtime.getDeviceProperties(device_id)
        self.sm_count = int(props.get("multiProcessorCount", 132))
        regs_per_sm = int(props.get("regsPerMultiprocessor", 65536))
        threads_per_sm = int(props.get("maxThreadsPerMultiProcessor", 2048))
        regs = max(_num_regs(cp, self.fn["pwl_pairs_fwd"]),
                   _num_regs(cp, self.fn["pwl_pairs_grad"]))
        self.blocks_per_sm = {}
        for tile in (32, 64, 128, 256):
            per_sm = min(32, threads_per_sm // tile)
            if regs > 0:  # registers are allocated per warp, in units of 256
                per_warp = -(-regs * 32 // 256) * 256
                per_sm = min(per_sm, (regs_per_sm // per_warp) // (tile // 32))
            self.blocks_per_sm[tile] = max(1, per_sm)
        self._plans: dict = {}

    def plan(self, n: int, n_sessions: int, waves: int, tile: Optional[int],
             chunks: Optional[int]) -> Plan:
        key = (n, n_sessions, waves, tile, chunks)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_launch(n, n_sessions, self.sm_count, self.blocks_per_sm, waves, tile,
                               chunks)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan


def _num_regs(cp: Any, fn: Any) -> int:
    """Registers per thread of a compiled kernel, or 0 when this CuPy cannot tell."""
    try:
        return int(fn.num_regs)
    except Exception:  # noqa: BLE001 - attribute missing in some CuPy versions
        pass
    try:  # CU_FUNC_ATTRIBUTE_NUM_REGS == 4
        return int(cp.cuda.driver.funcGetAttribute(4, fn.ptr))
    except Exception:  # noqa: BLE001 - then plan for full occupancy
        return 0


_KERNELS: dict = {}
_KERNELS_LOCK = threading.Lock()


def _cupy() -> Any:
    import cupy  # noqa: PLC0415 - lazily, so that CPU-only installs never import it
    return cupy


def _kernels(cp: Any, device_id: int) -> _DeviceKernels:
    kernels = _KERNELS.get(device_id)
    if kernels is None:
        with _KERNELS_LOCK:
            kernels = _KERNELS.get(device_id)
            if kernels is None:
                kernels = _KERNELS[device_id] = _DeviceKernels(cp, device_id)
    return kernels


def _prepare(cp: Any, kernels: _DeviceKernels, x: Any, label: Any, lengths: Any,
             tile: Optional[int], chunks: Optional[int], waves: int):
    """Common set-up: contiguous inputs, the plan, and (for S > 1) the offset arrays."""
    n = int(x.shape[0])
    if n >= 2 ** 31:
        raise ValueError(f"pairwise_loss CUDA kernels handle fewer than 2**31 items, got {n}")
    n_sessions = 1 if lengths is None else int(lengths.shape[0])
    x = cp.ascontiguousarray(x, dtype=cp.float32)
    label = cp.ascontiguousarray(label, dtype=cp.float32)
    plan = kernels.plan(n, n_sessions, waves, tile, chunks)
    if plan.single:
        off = toff = x  # not read by the kernels
    else:
        lengths = cp.ascontiguousarray(lengths, dtype=cp.int64)
        off = cp.empty((n_sessions + 1,), dtype=cp.int64)
        toff = cp.empty((n_sessions + 1,), dtype=cp.int64)
        kernels.fn["pwl_offsets"]((1,), (_OFFSETS_THREADS,),
                                  (lengths, np.int64(n_sessions), np.int32(plan.tile), off, toff))
    return n, n_sessions, x, label, plan, off, toff


def pairwise_loss_forward_cuda(x: Any, label: Any, lengths: Optional[Any] = None, *,
                               tile: Optional[int] = None, chunks: Optional[int] = None) -> Any:
    """Y (S,) float32 on x's device: per-session mean of logLogit(x_lo - x_hi) over the pairs.

    ``tile`` and ``chunks`` override the launch plan (for tests and tuning only).
    """
    cp = _cupy()
    with x.device:
        n_out = 1 if lengths is None else int(lengths.shape[0])
        if int(x.shape[0]) == 0 or n_out == 0:
            return cp.zeros((n_out,), dtype=cp.float32)
        kernels = _kernels(cp, x.device.id)
        n, n_sessions, x, label, plan, off, toff = _prepare(cp, kernels, x, label, lengths,
                                                            tile, chunks, waves=8)
        y = cp.empty((n_sessions,), dtype=cp.float32)
        if plan.direct_only:
            bsum, bcnt = x, x  # not written
        else:
            bsum = cp.empty((plan.chunks * plan.n_blocks,), dtype=cp.float64)
            bcnt = cp.empty((plan.chunks * plan.n_blocks,), dtype=cp.int64)
        kernels.fn["pwl_pairs_fwd"](
            (plan.n_blocks, plan.chunks), (plan.tile,),
            (x, label, off, toff, np.int64(n), np.int64(n_sessions), np.int32(plan.single),
             np.int32(plan.chunks), x, bsum, bcnt, bsum, y))
        if not plan.direct_only:
            kernels.fn["pwl_session_fwd"](
                (n_sessions,), (_SESSION_THREADS,),
                (off, toff, np.int64(n), np.int32(plan.single), np.int32(plan.chunks),
                 np.int32(plan.tile), np.int64(plan.n_blocks), bsum, bcnt, y, bcnt))
        return y


def pairwise_loss_gradient_cuda(x: Any, label: Any, dy: Any, lengths: Optional[Any] = None, *,
                                tile: Optional[int] = None,
                                chunks: Optional[int] = None) -> Any:
    """dX (N,) float32 on x's device: dY[s] * (sum over pairs of -+sigmoid(x_lo - x_hi)) / numPairs.

    ``tile`` and ``chunks`` override the launch plan (for tests and tuning only).
    """
    cp = _cupy()
    with x.device:
        if int(x.shape[0]) == 0:
            return cp.zeros((0,), dtype=cp.float32)
        kernels = _kernels(cp, x.device.id)
        n, n_sessions, x, label, plan, off, toff = _prepare(cp, kernels, x, label, lengths,
                                                            tile, chunks, waves=4)
        dy = cp.ascontiguousarray(dy, dtype=cp.float32)
        dx = cp.empty((n,), dtype=cp.float32)
        if plan.direct_only:
            bcnt = gpart = x  # not written
        else:
            bcnt = cp.empty((plan.chunks * plan.n_blocks,), dtype=cp.int64)
            gpart = cp.empty((plan.chunks * n,), dtype=cp.float64)
        kernels.fn["pwl_pairs_grad"](
            (plan.n_blocks, plan.chunks), (plan.tile,),
            (x, label, off, toff, np.int64(n), np.int64(n_sessions), np.int32(plan.single),
             np.int32(plan.chunks), dy, gpart, bcnt, gpart, dx))
        if not plan.direct_only:
            npairs = cp.empty((n_sessions,), dtype=cp.int64)
            kernels.fn["pwl_session_grad"](
                (n_sessions,), (_SESSION_THREADS,),
                (off, toff, np.int64(n), np.int32(plan.single), np.int32(plan.chunks),
                 np.int32(plan.tile), np.int64(plan.n_blocks), gpart, bcnt, dx, npairs))
            kernels.fn["pwl_grad_finalize"](
                (-(-n // _FINALIZE_THREADS),), (_FINALIZE_THREADS,),
                (off, np.int64(n), np.int64(n_sessions), np.int32(plan.single),
                 np.int32(plan.chunks), np.int32(plan.tile), gpart, npairs, dy, dx))
        return dx

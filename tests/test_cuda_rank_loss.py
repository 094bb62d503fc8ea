"""CUDA PairWiseLoss kernels (c2lite.ops._rank_loss_cuda) against a float64 NumPy reference.

GPU tests carry the ``cuda`` marker and are skipped, with the reason, when
``c2lite.device.has_gpu_support()`` is False. The rest runs on any machine: the module imports
without CuPy; nvcc compiles the CUDA source (when nvcc is on PATH); the reference agrees with
Caffe2's literal loops and with the CPU kernel; the launch planner; a NumPy emulation of the
kernels' index arithmetic and summation order (same blocks, tiles, chunks, partial slots and
reduction trees) against the reference; and the real host code driven through a fake CuPy whose
kernels are that emulation, with launch arguments bound by the parameter names and types of the
CUDA source. So a one-shot GPU run starts from checked logic.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from c2lite.device import has_gpu_support
from c2lite.ops import _rank_loss_cuda as rlc

HAS_GPU = has_gpu_support()
NO_GPU_REASON = ("no CUDA GPU or CuPy not installed (c2lite.device.has_gpu_support() is False): "
                 "CUDA PairWiseLoss kernels not run")


def gpu_test(fn):
    """Marks a test as needing the GPU: ``cuda`` marker plus a skip with a clear reason."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_GPU, reason=NO_GPU_REASON)(fn))


EPS = np.float32(2.0 ** -23)
KMIN = np.float32(-15.9423847198486328125)


# ---------------------------------------------------------------------------------------------
# float64 reference (Caffe2's semantics; per-pair z and label difference in float32)
# ---------------------------------------------------------------------------------------------
def reference(x, label, dy, lengths, rows=256):
    """(Y, dX, scale): float64 results and, per item, |dY| * sum of |pair terms| / numPairs."""
    x = np.asarray(x, np.float32)
    label = np.asarray(label, np.float32)
    n = x.shape[0]
    lens = [n] if lengths is None else [int(v) for v in lengths]
    dy = np.asarray(dy, np.float64)
    y = np.zeros(len(lens))
    dx = np.zeros(n)
    scale = np.zeros(n)
    start = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for s, length in enumerate(lens):
            xs = x[start:start + length]
            ls = label[start:start + length]
            total, pairs = 0.0, 0
            g = np.zeros(length)
            a = np.zeros(length)
            for r0 in range(0, length, rows):
                r1 = min(length, r0 + rows)
                ii = np.arange(r0, r1)[:, None]
                jj = np.arange(0, r1)[None, :]
                li, lj = ls[r0:r1, None], ls[None, :r1]
                xi, xj = xs[r0:r1, None], xs[None, :r1]
                counted = (jj < ii) & ~(np.abs(li - lj) < EPS)   # pairs (i, j < i), as Caffe2
                hi = li > lj                                     # Caffe2's sign: i is higher
                z = np.where(hi, xj - xi, xi - xj)               # float32, x_lo - x_hi
                z64 = z.astype(np.float64)
                term = np.where(z < KMIN, 0.0, np.where(z > -KMIN, z64, np.log1p(np.exp(z64))))
                total += float(term[counted].sum())
                pairs += int(counted.sum())
                sig = 1.0 / (1.0 + np.exp(-z64))
                ci = np.where(counted, np.where(hi, -sig, sig), 0.0)   # dX[i] share; dX[j] gets -ci
                g[r0:r1] += ci.sum(axis=1)
                g[:r1] -= ci.sum(axis=0)
                a[r0:r1] += np.abs(ci).sum(axis=1)
                a[:r1] += np.abs(ci).sum(axis=0)
            if pairs:
                y[s] = total / pairs
                dx[start:start + length] = dy[s] * g / pairs
                scale[start:start + length] = abs(dy[s]) * a / pairs
            start += length
    return y, dx, scale


def caffe2_loops(x, label, dy, lengths):
    """Literal transcription of Caffe2's loops (float64 sums): a check of ``reference``."""
    n = len(x)
    lens = [n] if lengths is None else list(lengths)
    y = np.zeros(len(lens))
    dx = np.zeros(n)
    start = 0
    with np.errstate(over="ignore"):
        for s, length in enumerate(lens):
            pairs = 0
            for i in range(start, start + length):
                for j in range(start, i):
                    if abs(np.float32(label[i] - label[j])) < EPS:
                        continue
                    pairs += 1
                    sign = 1 if label[i] > label[j] else -1
                    z = np.float32(sign * np.float32(x[j] - x[i]))
                    y[s] += 0.0 if z < KMIN else (float(z) if z > -KMIN
                                                  else np.log1p(np.exp(float(z))))
                    g = sign * float(dy[s]) / (1.0 + np.exp(-float(z)))
                    dx[i] -= g
                    dx[j] += g
            if pairs:
                y[s] /= pairs
                dx[start:start + length] /= pairs
            start += length
    return y, dx


def assert_forward_close(got, ref):
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-12)


def assert_gradient_close(got, ref, scale):
    """1e-5 relative, plus 1e-6 of the item's sum of |pair terms| (mixed-sign cancellation)."""
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == ref.shape
    err = np.abs(got.astype(np.float64) - ref)
    bound = 1e-5 * np.abs(ref) + 1e-6 * scale + 1e-30
    bad = np.flatnonzero(~(err <= bound))
    assert bad.size == 0, (f"{bad.size} items off, first {bad[:5]}: got {got[bad[:5]]}, "
                           f"ref {ref[bad[:5]]}, scale {scale[bad[:5]]}")


# ---------------------------------------------------------------------------------------------
# test data
# ---------------------------------------------------------------------------------------------
def make_labels(rng, n, kind):
    if kind == "graded":      # many ties
        return rng.integers(0, 4, n).astype(np.float32)
    if kind == "close":       # 1, 2, 3 ulps apart around 0.5 and 1: some < eps, some == eps
        base = rng.choice(np.array([0.5, 0.75, 1.0], np.float32), n)
        steps = rng.integers(0, 4, n).astype(np.float32)
        return (base + steps * np.float32(2.0 ** -24)).astype(np.float32)
    if kind == "nan":         # Caffe2 counts pairs with a NaN label
        lab = rng.random(n).astype(np.float32)
        lab[rng.random(n) < 0.05] = np.nan
        return lab
    if kind == "ties":
        return np.full(n, 3.0, np.float32)
    return rng.random(n).astype(np.float32)


LAYOUTS = {
    "mixed": [0, 5, 0, 1, 64, 65, 0, 200, 3, 257, 0, 2],
    "small_mixed": [0, 5, 0, 1, 17, 0, 40, 3, 2],
    "single_none": None,
    "single_len": [300],
    "one_nonempty": [0, 0, 130, 0],
    "many_small": "random",
    "all_empty_but_pairs": [1, 1, 2, 0, 1],
}


def make_case(seed, layout, kind="continuous", x_scale=1.0, n_single=300):
    rng = np.random.default_rng(seed)
    lengths = LAYOUTS[layout]
    if isinstance(lengths, str):
        lengths = rng.integers(0, 41, 30).tolist()
    n = n_single if lengths is None else int(sum(lengths))
    x = (rng.standard_normal(n) * x_scale).astype(np.float32)
    label = make_labels(rng, n, kind)
    n_sessions = 1 if lengths is None else len(lengths)
    dy = rng.standard_normal(n_sessions).astype(np.float32)
    lens = None if lengths is None else np.asarray(lengths, np.int64)
    return x, label, dy, lens


# ---------------------------------------------------------------------------------------------
# NumPy emulation of the CUDA kernels (same plan, indices, slots and summation order)
# ---------------------------------------------------------------------------------------------
def _find(a, count, v):
    lo, hi = 0, count - 1
    while lo < hi:
        mid = lo + (hi - lo + 1) // 2
        if a[mid] <= v:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tree(values):
    red = np.array(values, copy=True)
    w = red.shape[0] // 2
    while w > 0:
        red[:w] += red[w:2 * w]
        w //= 2
    return red[0]


def _emulate_offsets(lengths, tile):
    threads = 1024
    count = len(lengths)
    per = (count + threads - 1) // threads
    beg = np.minimum(np.arange(threads) * per, count)
    end = np.minimum(beg + per, count)
    la = np.array([int(sum(lengths[b:e])) for b, e in zip(beg, end)], np.int64)
    lt = np.array([int(sum((lengths[b:e] + tile - 1) // tile)) for b, e in zip(beg, end)],
                  np.int64)
    sa, st = la.copy(), lt.copy()
    d = 1
    while d < threads:
        va = np.concatenate([np.zeros(d, np.int64), sa[:-d]])
        vt = np.concatenate([np.zeros(d, np.int64), st[:-d]])
        sa, st = sa + va, st + vt
        d <<= 1
    off = np.full(count + 1, -1, np.int64)
    toff = np.full(count + 1, -1, np.int64)
    for t in range(threads):
        ea, et = sa[t] - la[t], st[t] - lt[t]
        for s in range(beg[t], end[t]):
            off[s], toff[s] = ea, et
            ea += lengths[s]
            et += (lengths[s] + tile - 1) // tile
    off[count], toff[count] = sa[-1], st[-1]
    return off, toff


def _emulate_pairs(grad, x, label, off, toff, n, n_sessions, single, chunks, tile, n_blocks, dy,
                   bsum, bcnt, gpart, out):
    T, K = tile, chunks
    lanes = np.arange(T)
    for b in range(n_blocks):
        for k in range(K):
            if single:
                if b * T >= n:
                    continue
                s, sb, se, r = 0, 0, n, b
            else:
                if b >= toff[n_sessions]:
                    continue
                s = _find(toff, n_sessions, b)
                sb, se, r = off[s], off[s + 1], b - toff[s]
            length = se - sb
            row0 = sb + r * T
            i = row0 + lanes
            valid = i < se
            row_end = min(row0 + T, se)
            c = (length + K - 1) // K
            j0 = sb + k * c
            j1 = min(j0 + c, se)
            if not grad:
                j1 = min(j1, row_end - 1)
            safe = np.where(valid, i, 0)
            xi = np.where(valid, x[safe], np.float32(0)).astype(np.float32)
            li = np.where(valid, label[safe], np.float32(0)).astype(np.float32)
            acc = np.zeros(T)
            cnt = np.zeros(T, np.int64)
            t0 = j0
            while t0 < j1:
                m = min(T, j1 - t0)
                tx, tl = x[t0:t0 + m], label[t0:t0 + m]
                rel = i - t0
                me = np.where(rel < 0, -1, np.where(rel > T, T, rel))
                stop = np.full(T, m) if grad else np.minimum(m, me)
                for jj in range(m):
                    active = valid & (jj < stop)
                    px, pl = tx[jj], tl[jj]
                    if not grad:
                        hi = li > pl
                        z = np.where(hi, px - xi, xi - px).astype(np.float32)
                        sp = np.log1p(np.exp(z))
                        term = np.where(z < KMIN, np.float32(0), np.where(z > -KMIN, z, sp))
                        take = active & ~(np.abs(li - pl) < EPS)
                        acc[take] += term[take].astype(np.float64)
                    else:
                        hi = np.where(jj < me, li > pl, ~(pl > li))
                        z = np.where(hi, px - xi, xi - px).astype(np.float32)
                        sg = (np.float32(1) / (np.float32(1) + np.exp(-z))).astype(np.float32)
                        take = active & (jj != me) & ~(np.abs(li - pl) < EPS)
                        acc[take] += np.where(hi, -sg.astype(np.float64), sg)[take]
                    cnt[take] += 1
                t0 += T
            direct = K == 1 and length <= T
            ctot = _tree(cnt)
            if not grad:
                tot = _tree(acc)
                if direct:
                    out[s] = np.float32(tot / ctot) if ctot > 0 else np.float32(0)
                else:
                    bsum[k * n_blocks + b] = tot
                    bcnt[k * n_blocks + b] = ctot
            else:
                if direct:
                    npairs = ctot // 2
                    vals = (np.float64(dy[s]) * acc / npairs if npairs > 0
                            else np.zeros(T))
                    out[i[valid]] = vals[valid].astype(np.float32)
                else:
                    gpart[k * n + i[valid]] = acc[valid]
                    bcnt[k * n_blocks + b] = ctot


def _emulate_session(grad, off, toff, n, single, chunks, tile, n_blocks, bsum, bcnt, y, npairs,
                     n_sessions):
    threads = 256
    for s in range(n_sessions):
        length = n if single else off[s + 1] - off[s]
        rows = (n + tile - 1) // tile if single else toff[s + 1] - toff[s]
        tb = 0 if single else toff[s]
        if chunks == 1 and 1 <= length <= tile:
            continue
        a = np.zeros(threads)
        c = np.zeros(threads, np.int64)
        for th in range(threads):
            for e in range(th, rows * chunks, threads):
                kk = e // rows
                idx = kk * n_blocks + tb + (e - kk * rows)
                if not grad:
                    a[th] += bsum[idx]
                c[th] += bcnt[idx]
        ctot = _tree(c)
        if not grad:
            atot = _tree(a)
            y[s] = np.float32(atot / ctot) if ctot > 0 else np.float32(0)
        else:
            npairs[s] = ctot // 2


def _emulate_finalize(off, n, n_sessions, single, chunks, tile, gpart, npairs, dy, dx):
    for i in range(n):
        s = 0 if single else _find(off, n_sessions, i)
        length = n if single else off[s + 1] - off[s]
        if chunks == 1 and length <= tile:
            continue
        g = 0.0
        for k in range(chunks):
            g += gpart[k * n + i]
        dx[i] = np.float32(np.float64(dy[s]) * g / npairs[s]) if npairs[s] > 0 else 0.0


def emulate(x, label, dy, lengths, tile=None, chunks=None):
    """(Y, dX) computed by the kernels' algorithm on the host; unwritten slots stay NaN/-big."""
    n = x.shape[0]
    n_sessions = 1 if lengths is None else len(lengths)
    plan = rlc.plan_launch(n, n_sessions, tile=tile, chunks=chunks)
    T, K, NB, single = plan.tile, plan.chunks, plan.n_blocks, plan.single
    if single:
        off = toff = None
    else:
        off, toff = _emulate_offsets(np.asarray(lengths, np.int64), T)
        np.testing.assert_array_equal(off, np.concatenate([[0], np.cumsum(lengths)]))
        assert toff[-1] <= NB
    results = []
    with np.errstate(over="ignore", invalid="ignore"):
        for grad in (False, True):
            bsum = np.full(K * NB, np.nan)
            bcnt = np.full(K * NB, -(1 << 40), np.int64)
            gpart = np.full(K * n, np.nan)
            out = np.full(n if grad else n_sessions, np.nan, np.float32)
            _emulate_pairs(grad, x, label, off, toff, n, n_sessions, single, K, T, NB, dy,
                           bsum, bcnt, gpart, out)
            npairs = np.full(n_sessions, -(1 << 40), np.int64)
            if not plan.direct_only:
                _emulate_session(grad, off, toff, n, single, K, T, NB, bsum, bcnt, out, npairs,
                                 n_sessions)
                if grad:
                    _emulate_finalize(off, n, n_sessions, single, K, T, gpart, npairs, dy, out)
            results.append(out)
    return results[0], results[1]


# ---------------------------------------------------------------------------------------------
# A fake CuPy whose kernels are the emulation above: runs the real host code (plans, buffers,
# launch order, argument lists) on the CPU. Arguments are bound to the parameter names and
# types parsed from CUDA_SOURCE, so a misordered or mistyped launch argument fails here.
# ---------------------------------------------------------------------------------------------
_C_TYPES = {"float*": np.float32, "double*": np.float64, "i64*": np.int64}
_C_SCALARS = {"i64": np.int64, "int": np.int32}


def kernel_signatures(source):
    import re  # noqa: PLC0415
    sigs = {}
    pattern = r'extern "C" __global__ void(?: __launch_bounds__\([^)]*\))?\s+(\w+)\(([^)]*)\)'
    for name, params in re.findall(pattern, source):
        sig = []
        for param in params.split(","):
            words = param.replace("*", "* ").split()
            words = [w for w in words if w not in ("const", "__restrict__")]
            sig.append(("".join(words[:-1]), words[-1]))
        sigs[name] = sig
    return sigs


class FakeArray(np.ndarray):
    """A host array that answers ``.device`` like a CuPy array on device 0."""

    class _Dev:
        id = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    @property
    def device(self):
        return FakeArray._Dev()


class Poison:
    """Stands for a pointer argument of the wrong type: the kernel must not touch it."""

    def __init__(self, where):
        self.where = where

    def __getitem__(self, key):
        raise AssertionError(f"{self.where} read, but the host passed a dummy of another type")

    def __setitem__(self, key, value):
        raise AssertionError(f"{self.where} written, but the host passed a dummy of another type")


class FakeFunction:
    def __init__(self, name, sig, launches):
        self.name, self.sig, self.launches = name, sig, launches
        self.num_regs = 30

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(self.sig), f"{self.name}: {len(args)} args for {len(self.sig)}"
        a = {}
        for (ctype, pname), value in zip(self.sig, args):
            where = f"{self.name}.{pname}"
            if ctype in _C_SCALARS:
                assert type(value) is _C_SCALARS[ctype], f"{where}: {type(value)}"
                a[pname] = int(value)
            else:
                assert isinstance(value, np.ndarray), f"{where} is not an array"
                assert value.flags.c_contiguous, f"{where} is not contiguous"
                ok = value.dtype == _C_TYPES[ctype]
                a[pname] = value.reshape(-1) if ok else Poison(where)
        self.launches.append(self.name)
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        with np.errstate(over="ignore", invalid="ignore"):
            getattr(self, "_" + self.name)(a, grid, block)

    def _pwl_offsets(self, a, grid, block):
        assert grid == (1, 1, 1) and block == (1024, 1, 1)
        off, toff = _emulate_offsets(a["lengths"][:a["S"]], a["T"])
        a["off"][:a["S"] + 1] = off
        a["toff"][:a["S"] + 1] = toff

    def _pairs(self, grad, a, grid, block):
        assert grid[1] == a["K"] and grid[2] == 1 and block[1:] == (1, 1)
        assert block[0] in (32, 64, 128, 256)
        _emulate_pairs(grad, a["x"], a["label"], a["off"], a["toff"], a["n"], a["S"],
                       a["single"], a["K"], block[0], grid[0], a["dy"], a["bsum"], a["bcnt"],
                       a["gpart"], a["out"])

    def _pwl_pairs_fwd(self, a, grid, block):
        self._pairs(False, a, grid, block)

    def _pwl_pairs_grad(self, a, grid, block):
        self._pairs(True, a, grid, block)

    def _session(self, grad, a, grid, block):
        assert block == (256, 1, 1) and grid[1:] == (1, 1)
        _emulate_session(grad, a["off"], a["toff"], a["n"], a["single"], a["K"], a["T"],
                         a["NB"], a["bsum"], a["bcnt"], a["y"], a["npairs"], grid[0])

    def _pwl_session_fwd(self, a, grid, block):
        self._session(False, a, grid, block)

    def _pwl_session_grad(self, a, grid, block):
        self._session(True, a, grid, block)

    def _pwl_grad_finalize(self, a, grid, block):
        assert grid[0] * block[0] >= a["n"]
        _emulate_finalize(a["off"], a["n"], a["S"], a["single"], a["K"], a["T"], a["gpart"],
                          a["npairs"], a["dy"], a["dx"])


class FakeCupy:
    """Just the CuPy surface that _rank_loss_cuda uses."""
    float32, float64, int64, int32 = np.float32, np.float64, np.int64, np.int32
    ndarray = np.ndarray

    def __init__(self):
        self.launches = []
        self.modules = 0
        fake = self

        class RawModule:
            def __init__(self, code, options=()):
                fake.modules += 1
                self.sigs = kernel_signatures(code)

            def get_function(self, name):
                return FakeFunction(name, self.sigs[name], fake.launches)

        class runtime:
            @staticmethod
            def getDeviceProperties(dev):
                return {"multiProcessorCount": 132, "regsPerMultiprocessor": 65536,
                        "maxThreadsPerMultiProcessor": 2048}

        class cuda:
            pass

        cuda.runtime = runtime
        self.cuda = cuda
        self.RawModule = RawModule

    @staticmethod
    def ascontiguousarray(a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    @staticmethod
    def empty(shape, dtype):  # poisoned, so that reading an unwritten slot shows
        out = np.empty(shape, dtype)
        out.fill(np.nan if np.dtype(dtype).kind == "f" else -(1 << 40))
        return out

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype)


@pytest.fixture
def fake_cupy(monkeypatch):
    fake = FakeCupy()
    monkeypatch.setattr(rlc, "_cupy", lambda: fake)
    monkeypatch.setattr(rlc, "_KERNELS", {})
    return fake


# ---------------------------------------------------------------------------------------------
# CPU-runnable tests
# ---------------------------------------------------------------------------------------------
def test_module_imports_without_cupy():
    code = ("import sys; import c2lite.ops._rank_loss_cuda as m; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; "
            "assert 'pwl_pairs_grad' in m.CUDA_SOURCE")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    src = tmp_path / "pairwise_loss.cu"
    src.write_text(rlc.CUDA_SOURCE)
    ptx = tmp_path / "pairwise_loss.ptx"
    proc = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", "-o", str(ptx), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = ptx.read_text()
    for name in rlc._KERNEL_NAMES:
        assert f".entry {name}(" in text, f"kernel {name} missing (name mangled?)"


def test_reference_matches_caffe2_loops():
    for seed, layout, kind in [(1, "small_mixed", "graded"), (2, "one_nonempty", "close"),
                               (3, "small_mixed", "nan"), (4, "all_empty_but_pairs", "continuous"),
                               (5, "small_mixed", "continuous")]:
        x, label, dy, lengths = make_case(seed, layout, kind, x_scale=12.0)
        y, dx, scale = reference(x, label, dy, lengths, rows=7)
        y2, dx2 = caffe2_loops(x, label, dy, lengths)
        np.testing.assert_allclose(y, y2, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(dx, dx2, rtol=1e-9, atol=1e-12)


def test_reference_matches_cpu_kernel():
    """The reference (hence the CUDA kernels) and the CPU op kernel agree on semantics."""
    cpu = pytest.importorskip("c2lite.ops._rank_loss_cpu")
    for seed, layout, kind, x_scale in [(1, "mixed", "graded", 4.0), (2, "mixed", "close", 1.0),
                                        (3, "many_small", "nan", 1.0),
                                        (4, "single_none", "continuous", 40.0),
                                        (5, "one_nonempty", "ties", 1.0)]:
        x, label, dy, lengths = make_case(seed, layout, kind, x_scale)
        ref_y, ref_dx, scale = reference(x, label, dy, lengths)
        with np.errstate(all="ignore"):
            y = cpu.pairwise_loss_forward(x, label, lengths)
            dx = cpu.pairwise_loss_gradient(x, label, dy, lengths)
        assert_forward_close(y, ref_y)
        assert_gradient_close(dx, ref_dx, scale)


def test_kernel_signatures_parsed():
    sigs = kernel_signatures(rlc.CUDA_SOURCE)
    assert set(sigs) == set(rlc._KERNEL_NAMES)
    assert sigs["pwl_pairs_fwd"] == sigs["pwl_pairs_grad"]
    assert sigs["pwl_pairs_grad"][4] == ("i64", "n")
    assert sigs["pwl_pairs_grad"][-1] == ("float*", "out")


HOST_CASES = [
    ("mixed", "graded", 1.0, None, None),
    ("mixed", "continuous", 30.0, 64, 3),
    ("single_none", "close", 1.0, None, None),   # 300 items: T 256, K 2
    ("single_none", "continuous", 1.0, 64, 1),   # one session over several tiles, K 1
    ("single_len", "nan", 1.0, 256, 1),
    ("small_mixed", "graded", 1.0, 32, 1),
    ("all_empty_but_pairs", "continuous", 1.0, None, None),
]


@pytest.mark.parametrize("layout,kind,x_scale,tile,chunks", HOST_CASES)
def test_host_code_with_emulated_kernels(fake_cupy, layout, kind, x_scale, tile, chunks):
    x, label, dy, lengths = make_case(9, layout, kind, x_scale)
    ref_y, ref_dx, scale = reference(x, label, dy, lengths)
    gx, gl = x.view(FakeArray), label.view(FakeArray)
    glen = None if lengths is None else lengths.view(FakeArray)
    y = rlc.pairwise_loss_forward_cuda(gx, gl, glen, tile=tile, chunks=chunks)
    dx = rlc.pairwise_loss_gradient_cuda(gx, gl, dy.view(FakeArray), glen, tile=tile,
                                         chunks=chunks)
    assert not np.isnan(y).any() and not np.isnan(dx).any()
    assert_forward_close(y, ref_y)
    assert_gradient_close(dx, ref_dx, scale)
    assert fake_cupy.modules == 1  # compiled once per device, then cached


def test_host_code_launch_counts(fake_cupy):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(64).astype(np.float32).view(FakeArray)
    label = rng.integers(0, 3, 64).astype(np.float32).view(FakeArray)
    dy = np.ones(1, np.float32).view(FakeArray)
    for lengths in (None, np.array([64], np.int64).view(FakeArray)):
        fake_cupy.launches.clear()
        rlc.pairwise_loss_forward_cuda(x, label, lengths)
        rlc.pairwise_loss_gradient_cuda(x, label, dy, lengths)
        assert fake_cupy.launches == ["pwl_pairs_fwd", "pwl_pairs_grad"]  # one launch each
    fake_cupy.launches.clear()
    lengths = np.array([30, 0, 34], np.int64).view(FakeArray)
    rlc.pairwise_loss_gradient_cuda(x, label, np.ones(3, np.float32).view(FakeArray), lengths)
    assert fake_cupy.launches == ["pwl_offsets", "pwl_pairs_grad", "pwl_session_grad",
                                  "pwl_grad_finalize"]
    # empty inputs: no launch at all
    fake_cupy.launches.clear()
    empty = np.zeros(0, np.float32).view(FakeArray)
    assert rlc.pairwise_loss_forward_cuda(empty, empty, None).tolist() == [0.0]
    zeros3 = np.zeros(3, np.int64).view(FakeArray)
    assert rlc.pairwise_loss_forward_cuda(empty, empty, zeros3).tolist() == [0.0, 0.0, 0.0]
    assert rlc.pairwise_loss_gradient_cuda(empty, empty, dy, None).shape == (0,)
    assert fake_cupy.launches == []


def test_plan_launch():
    p = rlc.plan_launch(64, 1)
    assert (p.tile, p.chunks, p.single, p.direct_only) == (64, 1, True, True)
    p = rlc.plan_launch(20000, 1, sm_count=132, blocks_per_sm={256: 8}, waves=4)
    assert p.tile == 256 and p.n_blocks == 79 and p.chunks == (4 * 132 * 8) // 79
    assert not p.direct_only
    assert rlc.plan_launch(2_000_000, 20_000).chunks == 1
    assert rlc.plan_launch(2_000_000, 20_000).tile == 128
    assert rlc.plan_launch(300, 1, chunks=1).tile == 256
    with pytest.raises(ValueError):
        rlc.plan_launch(10, 1, tile=48)
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, rng.integers(1, 600), rng.integers(1, 50))
        n = int(lengths.sum())
        if n == 0:
            continue
        p = rlc.plan_launch(n, len(lengths))
        tiles = int(((lengths + p.tile - 1) // p.tile).sum())
        assert tiles <= p.n_blocks
        assert 1 <= p.chunks <= max(1, -(-n // 256))


EMULATION_CASES = [
    ("mixed", "graded", 1.0, 64, 1),
    ("mixed", "close", 1.0, 64, 3),
    ("mixed", "continuous", 30.0, 128, 1),   # x spread: many pairs beyond the cut-offs
    ("mixed", "nan", 1.0, 256, 2),
    ("single_none", "continuous", 1.0, 64, 1),
    ("single_none", "graded", 20.0, 64, 4),
    ("single_none", "close", 1.0, 256, 1),   # direct path, one launch
    ("single_len", "continuous", 1.0, None, None),
    ("one_nonempty", "ties", 1.0, 64, 2),
    ("many_small", "graded", 3.0, None, None),
    ("many_small", "continuous", 1.0, 32, 1),
    ("all_empty_but_pairs", "continuous", 1.0, 64, 1),
    ("all_empty_but_pairs", "graded", 1.0, 32, 3),
]


@pytest.mark.parametrize("layout,kind,x_scale,tile,chunks", EMULATION_CASES)
def test_emulated_kernels_match_reference(layout, kind, x_scale, tile, chunks):
    x, label, dy, lengths = make_case(7, layout, kind, x_scale)
    y, dx = emulate(x, label, dy, lengths, tile=tile, chunks=chunks)
    ref_y, ref_dx, scale = reference(x, label, dy, lengths)
    assert not np.isnan(y).any() and not np.isnan(dx).any(), "an output slot was never written"
    assert_forward_close(y, ref_y)
    assert_gradient_close(dx, ref_dx, scale)


# ---------------------------------------------------------------------------------------------
# GPU tests
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def cp():
    import cupy  # noqa: PLC0415
    return cupy


def run_cuda(cp, x, label, dy, lengths, tile=None, chunks=None):
    gx, gl, gdy = cp.asarray(x), cp.asarray(label), cp.asarray(dy)
    glen = None if lengths is None else cp.asarray(lengths, dtype=cp.int64)
    y = rlc.pairwise_loss_forward_cuda(gx, gl, glen, tile=tile, chunks=chunks)
    dx = rlc.pairwise_loss_gradient_cuda(gx, gl, gdy, glen, tile=tile, chunks=chunks)
    assert isinstance(y, cp.ndarray) and isinstance(dx, cp.ndarray)
    return cp.asnumpy(y), cp.asnumpy(dx)


PLANS = [(None, None), (64, 1), (64, 3), (256, 1), (128, 5), (32, 2), (256, 7)]
GPU_CASES = [(layout, kind, scale) for layout in LAYOUTS
             for kind, scale in (("continuous", 1.0), ("graded", 4.0), ("close", 1.0),
                                 ("nan", 1.0), ("continuous", 40.0))]


@gpu_test
@pytest.mark.parametrize("layout,kind,x_scale", GPU_CASES)
def test_cuda_matches_reference(cp, layout, kind, x_scale):
    x, label, dy, lengths = make_case(11, layout, kind, x_scale)
    ref_y, ref_dx, scale = reference(x, label, dy, lengths)
    for tile, chunks in PLANS:
        y, dx = run_cuda(cp, x, label, dy, lengths, tile, chunks)
        assert_forward_close(y, ref_y)
        assert_gradient_close(dx, ref_dx, scale)


@gpu_test
def test_cuda_is_bit_identical_across_runs(cp):
    x, label, dy, lengths = make_case(5, "mixed", "graded", 3.0)
    big = make_case(6, "single_none", "continuous", 2.0, n_single=5000)
    for case in ((x, label, dy, lengths), big):
        for tile, chunks in ((None, None), (64, 3)):
            y1, dx1 = run_cuda(cp, *case, tile=tile, chunks=chunks)
            y2, dx2 = run_cuda(cp, *case, tile=tile, chunks=chunks)
            assert y1.tobytes() == y2.tobytes()
            assert dx1.tobytes() == dx2.tobytes()


@gpu_test
def test_cuda_edge_sizes(cp):
    f32 = cp.float32
    empty = cp.zeros((0,), f32)
    # N == 0: lengths None -> one session; S zero-length sessions -> S zeros; S == 0 -> empty.
    assert rlc.pairwise_loss_forward_cuda(empty, empty, None).shape == (1,)
    y = rlc.pairwise_loss_forward_cuda(empty, empty, cp.zeros((3,), cp.int64))
    assert cp.asnumpy(y).tolist() == [0.0, 0.0, 0.0]
    assert rlc.pairwise_loss_forward_cuda(empty, empty, cp.zeros((0,), cp.int64)).shape == (0,)
    dx = rlc.pairwise_loss_gradient_cuda(empty, empty, cp.ones((1,), f32), None)
    assert dx.shape == (0,) and dx.dtype == f32
    # one item, and a session of ties: no pairs -> zeros
    one = cp.ones((1,), f32)
    assert cp.asnumpy(rlc.pairwise_loss_forward_cuda(one, one, None)).tolist() == [0.0]
    assert cp.asnumpy(rlc.pairwise_loss_gradient_cuda(one, one, one, None)).tolist() == [0.0]
    ties = cp.full((1000,), 2.0, f32)
    xs = cp.arange(1000, dtype=f32)
    assert cp.asnumpy(rlc.pairwise_loss_forward_cuda(xs, ties, None)).tolist() == [0.0]
    assert not cp.asnumpy(rlc.pairwise_loss_gradient_cuda(xs, ties, one, None)).any()
    # int32 lengths are accepted (converted)
    x, label, dy, lengths = make_case(3, "mixed", "continuous")
    ref_y, _, _ = reference(x, label, dy, lengths)
    y = rlc.pairwise_loss_forward_cuda(cp.asarray(x), cp.asarray(label),
                                       cp.asarray(lengths, dtype=cp.int32))
    assert_forward_close(cp.asnumpy(y), ref_y)


@gpu_test
def test_cuda_one_huge_session(cp):
    rng = np.random.default_rng(20000)
    n = 20000
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    label = rng.integers(0, 5, n).astype(np.float32)
    label[: n // 2] = rng.random(n // 2).astype(np.float32)
    dy = np.array([0.75], np.float32)
    ref_y, ref_dx, scale = reference(x, label, dy, None)
    y, dx = run_cuda(cp, x, label, dy, None)
    assert_forward_close(y, ref_y)
    assert_gradient_close(dx, ref_dx, scale)
    y, dx = run_cuda(cp, x, label, dy, np.array([n], np.int64))
    assert_forward_close(y, ref_y)
    assert_gradient_close(dx, ref_dx, scale)


@gpu_test
def test_cuda_many_short_sessions(cp):
    rng = np.random.default_rng(200)
    lengths = rng.integers(1, 201, 5000).astype(np.int64)
    lengths[::97] = 0
    n = int(lengths.sum())
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    label = rng.integers(0, 5, n).astype(np.float32)
    dy = rng.standard_normal(len(lengths)).astype(np.float32)
    ref_y, ref_dx, scale = reference(x, label, dy, lengths)
    y, dx = run_cuda(cp, x, label, dy, lengths)
    assert_forward_close(y, ref_y)
    assert_gradient_close(dx, ref_dx, scale)

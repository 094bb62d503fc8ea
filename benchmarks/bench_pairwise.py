#!/usr/bin/env python
"""PairWiseLoss benchmark: c2lite kernels vs a scalar C loop of the original.

The baseline (benchmarks/pairwise_loop.c) is the original operator's loop
nest with float32 accumulation, compiled here with ``cc -O2`` into
benchmarks/_build/ and called through ctypes.  Workloads (seeded):

  W1  20,000 sessions, lengths uniform 1..200, labels 0..4, normal scores
  W2  one session of 20,000 items
  W3  one 64-item session, called repeatedly (per-call latency)
  W4  one session of 100,000 items (c2lite time and memory; the C time is
      extrapolated from its W2 rate, running it would take about a minute)

Each figure is forward + gradient on the same inputs (dY = 1), best of a
few runs.  "pairs" counts label-differing pairs, the loop's real work.
Peak extra memory is traced with tracemalloc over one forward + gradient.
The accuracy lines compare both implementations with a float64 evaluation
of the same formula on W2.

c2lite is timed as a user runs it: PairWiseLoss and PairWiseLossGradient inside a created net,
the inputs already in the workspace, so op checks and runtime overhead are included.

Usage: python benchmarks/bench_pairwise.py [--quick]
"""

import ctypes
import os
import shutil
import subprocess
import sys
import time
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from c2lite import Workspace, core  # noqa: E402
from c2lite.ops import _rank_loss_cpu as kernel  # noqa: E402


# --------------------------------------------------------------------------
# the implementation under test: swap this for a whole-op runner
# --------------------------------------------------------------------------

class NetRunner:
    """Forward + gradient through one created net; inputs are placed in the workspace
    (no copy) before each run, as the previous op of a training net would leave them."""

    def __init__(self):
        self.ws = Workspace("bench_pairwise")
        self.nets = {}

    def __call__(self, x, label, dY, lengths):
        ws = self.ws
        with_lengths = lengths is not None
        for name, value in (("X", x), ("label", label), ("dY", dY)):
            ws.set_blob(name, value)
        if with_lengths:
            ws.set_blob("lengths", lengths)
        name = self.nets.get(with_lengths)
        if name is None:
            net = core.Net("pairwise_fwd_bwd")
            extra = ["lengths"] if with_lengths else []
            net.PairWiseLoss(["X", "label"] + extra, "Y")
            net.PairWiseLossGradient(["X", "label", "dY"] + extra, "dX")
            ws.create_net(net)
            name = self.nets[with_lengths] = net.Name()
        ws.run_net(name)
        return ws.get_blob("Y"), ws.get_blob("dX")


c2lite_forward_backward = NetRunner()

run_op = c2lite_forward_backward


# --------------------------------------------------------------------------
# C baseline
# --------------------------------------------------------------------------

def build_loop():
    """Compile pairwise_loop.c; returns the ctypes library or None."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        print("no C compiler found (cc / gcc): skipping the C baseline")
        return None
    out_dir = os.path.join(HERE, "_build")
    os.makedirs(out_dir, exist_ok=True)
    src = os.path.join(HERE, "pairwise_loop.c")
    lib_path = os.path.join(out_dir, "pairwise_loop.so")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", lib_path, src, "-lm"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        msg = getattr(exc, "stderr", "") or str(exc)
        print("C baseline build failed (%s): skipping it\n%s"
              % (" ".join(cmd), msg))
        return None
    lib = ctypes.CDLL(lib_path)
    p = ctypes.c_void_p
    i64 = ctypes.c_int64
    lib.pairwise_loss_forward.argtypes = [p, p, p, i64, i64, p]
    lib.pairwise_loss_forward.restype = None
    lib.pairwise_loss_gradient.argtypes = [p, p, p, p, i64, i64, p]
    lib.pairwise_loss_gradient.restype = None
    return lib


def c_forward_backward(lib, x, label, dY, lengths):
    n = x.shape[0]
    if lengths is None:
        lens_ptr, nsess = None, 1
    else:
        lens32 = np.ascontiguousarray(lengths, dtype=np.int32)
        lens_ptr, nsess = lens32.ctypes.data, lens32.shape[0]
    y = np.zeros(nsess, dtype=np.float32)
    dx = np.zeros(n, dtype=np.float32)
    lib.pairwise_loss_forward(x.ctypes.data, label.ctypes.data, lens_ptr,
                              nsess, n, y.ctypes.data)
    lib.pairwise_loss_gradient(x.ctypes.data, label.ctypes.data,
                               dY.ctypes.data, lens_ptr, nsess, n,
                               dx.ctypes.data)
    return y, dx


# --------------------------------------------------------------------------
# workloads and helpers
# --------------------------------------------------------------------------

def workload(name):
    rng = np.random.default_rng({"W1": 1, "W2": 2, "W3": 3, "W4": 4}[name])
    if name == "W1":
        lengths = rng.integers(1, 201, 20000).astype(np.int64)
        n = int(lengths.sum())
    else:
        lengths = None
        n = {"W2": 20000, "W3": 64, "W4": 100000}[name]
    x = rng.standard_normal(n).astype(np.float32)
    label = rng.integers(0, 5, n).astype(np.float32)
    return x, label, lengths


def count_pairs(label, lengths):
    """Label-differing pairs for integer labels 0..4."""
    lens = np.array([label.shape[0]]) if lengths is None else lengths
    sid = np.repeat(np.arange(lens.shape[0]), lens)
    cnt = np.bincount(sid * 5 + label.astype(np.int64),
                      minlength=5 * lens.shape[0]).reshape(-1, 5)
    same = (cnt * (cnt - 1) // 2).sum()
    return int((lens * (lens - 1) // 2).sum() - same)


def best_time(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def c2lite_step(x, label, dy, lengths):
    kernel.clear_cache()          # each step starts with a fresh forward
    return run_op(x, label, dy, lengths)


def peak_extra_mb(x, label, dy, lengths):
    kernel.clear_cache()
    tracemalloc.start()
    try:
        run_op(x, label, dy, lengths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 2.0 ** 20


def reference64(x, label, dy, rows=256):
    """Float64 loss and gradient of one session, per pair, row-chunked."""
    xs = x.astype(np.float64)
    n = xs.shape[0]
    k = float(np.log(np.float32(np.finfo(np.float32).eps)))
    eps = np.float32(np.finfo(np.float32).eps)
    loss = 0.0
    pairs = 0
    g = np.zeros(n)
    for r0 in range(1, n, rows):
        r1 = min(n, r0 + rows)
        i = np.arange(r0, r1)[:, None]
        j = np.arange(r1)[None, :]
        dl = label[r0:r1, None] - label[None, :r1]          # float32
        cnt = ~(np.abs(dl) < eps) & (j < i)
        sgn = np.where(label[r0:r1, None] > label[None, :r1], 1.0, -1.0)
        z = sgn * (xs[None, :r1] - xs[r0:r1, None])
        with np.errstate(over="ignore"):
            f = np.where(z < k, 0.0, np.where(z > -k, z,
                                              np.log1p(np.exp(z))))
            s = sgn / (1.0 + np.exp(-z))
        loss += float(f[cnt].sum())
        pairs += int(cnt.sum())
        s = np.where(cnt, s, 0.0)
        g[r0:r1] -= s.sum(axis=1)
        g[:r1] += s.sum(axis=0)
    return loss / pairs, g * (float(dy[0]) / pairs)


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

BARS = {"W1": (6.0, 12.0), "W2": (18.0, 25.0), "W3": (0.5, 1.0)}


def main(argv):
    quick = "--quick" in argv
    lib = build_loop()
    print("c2lite kernel threads: %d   (numpy %s)"
          % (kernel._n_threads(), np.__version__))

    # agreement on a small case
    rng = np.random.default_rng(0)
    lens = np.array([5, 0, 40, 1, 130], dtype=np.int64)
    n = int(lens.sum())
    xs = (rng.standard_normal(n) * 3).astype(np.float32)
    ls = rng.integers(0, 4, n).astype(np.float32)
    dy = rng.standard_normal(lens.shape[0]).astype(np.float32)
    y1, g1 = c2lite_step(xs, ls, dy, lens)
    if lib is not None:
        y0, g0 = c_forward_backward(lib, xs, ls, dy, lens)
        ok = (np.allclose(y0, y1, rtol=1e-4, atol=1e-6)
              and np.allclose(g0, g1, rtol=1e-3, atol=1e-6))
        print("agreement check (C loop vs c2lite, small case): %s"
              % ("ok" if ok else "MISMATCH"))
        if not ok:
            return 1

    rows = []
    rates = {}
    for name in ("W1", "W2", "W3", "W4"):
        x, label, lengths = workload(name)
        nsess = 1 if lengths is None else lengths.shape[0]
        dy = np.ones(nsess, dtype=np.float32)
        pairs = count_pairs(label, lengths)
        calls = 2000 if name == "W3" else 1
        if quick and name != "W3":
            reps_c, reps_k = 1, 2
        else:
            reps_c, reps_k = 2, 4

        def k_run():
            for _ in range(calls):
                c2lite_step(x, label, dy, lengths)
        k_run()                                   # warm up
        tk = best_time(k_run, reps_k) / calls
        tc = None
        est = False
        if lib is not None:
            if name == "W4":
                per = rates.get("W2")
                if per is not None:
                    tc = per * (x.shape[0] * (x.shape[0] - 1) / 2.0)
                    est = True
            else:
                def c_run():
                    for _ in range(calls):
                        c_forward_backward(lib, x, label, dy, lengths)
                tc = best_time(c_run, reps_c) / calls
                if name == "W2":
                    rates["W2"] = tc / (x.shape[0] * (x.shape[0] - 1) / 2.0)
        mem = peak_extra_mb(x, label, dy, lengths)
        rows.append((name, pairs, tc, est, tk, mem))

    print()
    hdr = ("%-4s %12s %12s %12s %11s %11s %8s %9s %6s %9s"
           % ("work", "pairs", "C loop", "c2lite", "C pairs/s",
              "c2l pairs/s", "ratio", "bar", "", "peak MiB"))
    print(hdr)
    print("-" * len(hdr))
    status = 0
    for name, pairs, tc, est, tk, mem in rows:
        def fmt_t(t):
            if t is None:
                return "n/a"
            return "%.1f us" % (t * 1e6) if t < 1e-3 else "%.1f ms" % (t * 1e3)
        ratio = (tc / tk) if tc else None
        bar = BARS.get(name)
        if bar is None:
            verdict = "PASS" if mem < 64 else "FAIL"
            bar_s = "<64MiB"
        elif ratio is None:
            verdict, bar_s = "n/a", "%gx" % bar[0]
        else:
            verdict = "PASS" if ratio >= bar[0] else "FAIL"
            bar_s = "%gx(%gx)" % bar
        if verdict == "FAIL":
            status = 1
        print("%-4s %12d %12s %12s %11s %11s %8s %9s %6s %9.1f"
              % (name, pairs, fmt_t(tc) + ("*" if est else ""), fmt_t(tk),
                 "%.3g" % (pairs / tc) if tc else "n/a",
                 "%.3g" % (pairs / tk),
                 "%.1fx" % ratio if ratio else "n/a", bar_s, verdict, mem))
    print("bar: minimum (target) speed-up over the C loop; W3 is per call "
          "(the whole op pair through a created net); "
          "* = extrapolated from the W2 rate")

    # accuracy story on W2
    x, label, lengths = workload("W2")
    dy = np.ones(1, dtype=np.float32)
    y64, g64 = reference64(x, label, dy)
    yk, gk = c2lite_step(x, label, dy, lengths)
    print()
    print("accuracy on W2 vs a float64 evaluation (max |err| / max |ref|):")
    if lib is not None:
        yc, gc = c_forward_backward(lib, x, label, dy, lengths)
        print("  C loop (float32 sums): loss %.2e   gradient %.2e"
              % (rel_err(yc, [y64]), rel_err(gc, g64)))
    print("  c2lite               : loss %.2e   gradient %.2e"
          % (rel_err(yk, [y64]), rel_err(gk, g64)))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

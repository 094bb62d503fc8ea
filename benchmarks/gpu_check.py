"""One-shot GPU check for c2lite: environment, CUDA tests, PairWiseLoss GPU benchmark.

Run on a machine with a CUDA GPU, CuPy, pytest and an editable c2lite install (see
gpu_check.sh). In order it:
1. prints the environment (Python, NumPy, CuPy, CUDA, device, protobuf);
2. runs ``pytest -q -m cuda tests/`` in a subprocess (every CUDA-marked test, this module's and
   the CPU-vs-CUDA device checks others add);
3. benchmarks the CUDA PairWiseLoss kernels, forward + gradient, with warm-up and CUDA events:
   W1-GPU one session of 20,000 items (bar: >= 100 G label-differing pairs/s),
   W2-GPU 20,000 sessions of 1..200 items (bar: >= 20 G pairs/s),
   W3-GPU one 64-item session, host time per call (bar: < 30 us), through the functions and,
   when the registry has a CUDA PairWiseLoss, through Workspace.run_operator_once;
   and the same data through the CPU kernels (c2lite.ops._rank_loss_cpu) in a child process
   with a time limit, for the GPU/CPU speed ratio and a CPU-vs-GPU agreement line.
Exit status: 0 all passed, 1 a test or a bar failed, 2 no usable GPU here.
Options: --no-tests skips step 2 (benchmark only).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = float(np.float32(2.0 ** -23))
BAR_W1_PAIRS_PER_S = 100e9
BAR_W2_PAIRS_PER_S = 20e9
BAR_W3_US = 30.0
PYTEST_TIMEOUT_S = 150
CPU_TIMEOUT_S = {"W1": 45, "W2": 45, "W3": 15}
TOTAL_BUDGET_S = 225          # the whole run stays under 4 minutes
_DEADLINE = [float("inf")]


def time_left(reserve: float = 0.0) -> float:
    return _DEADLINE[0] - time.perf_counter() - reserve


# ---------------------------------------------------------------------------------------------
# workloads (deterministic: the CPU child regenerates the same data from the same seeds)
# ---------------------------------------------------------------------------------------------
def workload(name: str):
    """(x, label, dY, lengths or None) as NumPy arrays."""
    if name == "W1":
        rng = np.random.default_rng(101)
        n = 20000
        x = (rng.standard_normal(n) * 2).astype(np.float32)
        label = rng.random(n).astype(np.float32)
        return x, label, np.array([1.0], np.float32), None
    if name == "W2":
        rng = np.random.default_rng(202)
        lengths = rng.integers(1, 201, 20000).astype(np.int64)
        n = int(lengths.sum())
        x = (rng.standard_normal(n) * 2).astype(np.float32)
        label = rng.random(n).astype(np.float32)
        dy = rng.standard_normal(len(lengths)).astype(np.float32)
        return x, label, dy, lengths
    if name == "W3":
        rng = np.random.default_rng(303)
        x = rng.standard_normal(64).astype(np.float32)
        label = rng.integers(0, 5, 64).astype(np.float32)
        return x, label, np.array([1.0], np.float32), None
    raise ValueError(name)


def label_differing_pairs(label: np.ndarray, lengths) -> int:
    """Pairs inside sessions whose labels differ by at least FLT_EPSILON (NaN-free labels)."""
    lens = [label.shape[0]] if lengths is None else [int(v) for v in lengths]
    total, start = 0, 0
    for length in lens:
        s = np.sort(label[start:start + length].astype(np.float64))
        close = np.searchsorted(s, s + EPS, side="left") - np.arange(length) - 1
        total += length * (length - 1) // 2 - int(close.sum())
        start += length
    return total


# ---------------------------------------------------------------------------------------------
# CPU child: python gpu_check.py --cpu-time NAME OUT.npz
# ---------------------------------------------------------------------------------------------
def cpu_child(name: str, out_path: str) -> None:
    from c2lite.ops import _rank_loss_cpu as cpu  # noqa: PLC0415
    x, label, dy, lengths = workload(name)
    reps = 200 if name == "W3" else 1
    t0 = time.perf_counter()
    for _ in range(reps):
        y = cpu.pairwise_loss_forward(x, label, lengths)
    t1 = time.perf_counter()
    for _ in range(reps):
        dx = cpu.pairwise_loss_gradient(x, label, dy, lengths)
    t2 = time.perf_counter()
    np.savez(out_path, y=np.asarray(y), dx=np.asarray(dx))
    print(json.dumps({"fwd": (t1 - t0) / reps, "grad": (t2 - t1) / reps}))


def cpu_times(name: str):
    """(times dict or None, outputs or None, note) from a child process with a time limit."""
    limit = max(3.0, min(CPU_TIMEOUT_S[name], time_left(reserve=20.0)))
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "cpu.npz")
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--cpu-time", name,
                                   out_path], capture_output=True, text=True, cwd=ROOT,
                                  timeout=limit)
        except subprocess.TimeoutExpired:
            return None, None, f"CPU kernel: over {limit:.0f} s (stopped; no ratio)"
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return None, None, f"CPU kernel unavailable: {last}"
        times = json.loads(proc.stdout.strip().splitlines()[-1])
        data = np.load(out_path)
        return times, (data["y"], data["dx"]), ""


# ---------------------------------------------------------------------------------------------
# GPU side
# ---------------------------------------------------------------------------------------------
def environment(cp) -> None:
    print("== environment")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"numpy {np.__version__}, cupy {cp.__version__}")
    try:
        import google.protobuf  # noqa: PLC0415
        print(f"protobuf {google.protobuf.__version__}")
    except Exception as exc:  # noqa: BLE001
        print(f"protobuf: not importable ({exc})")
    try:
        rt = cp.cuda.runtime.runtimeGetVersion()
        drv = cp.cuda.runtime.driverGetVersion()
        print(f"CUDA runtime {rt}, driver {drv}")
    except Exception as exc:  # noqa: BLE001
        print(f"CUDA versions: {exc}")
    count = cp.cuda.runtime.getDeviceCount()
    for dev in range(count):
        props = cp.cuda.runtime.getDeviceProperties(dev)
        name = props.get("name", b"?")
        name = name.decode() if isinstance(name, bytes) else str(name)
        print(f"device {dev}: {name}, {props.get('multiProcessorCount')} SMs, "
              f"{props.get('totalGlobalMem', 0) / 2**30:.1f} GiB, cc {props.get('major')}."
              f"{props.get('minor')}")
    import c2lite  # noqa: PLC0415
    print(f"c2lite from {os.path.dirname(c2lite.__file__)}")


def run_pytest() -> bool:
    print("\n== pytest -q -m cuda tests/", flush=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", "tests/"]
    limit = min(PYTEST_TIMEOUT_S, time_left(reserve=60.0))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"pytest: stopped after {limit:.0f} s")
        return False
    print(f"pytest exit status {proc.returncode}")
    return proc.returncode == 0


def gpu_seconds(cp, fn, reps: int, warmup: int = 3) -> float:
    """Mean device seconds per call of ``fn`` (CUDA events around ``reps`` back-to-back calls)."""
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3 / reps


def host_us_per_call(cp, fn, reps: int = 2000, warmup: int = 50) -> float:
    """Host wall time per call (us) of back-to-back calls, synchronised once at the end."""
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        cp.cuda.Device().synchronize()
        best = min(best, (time.perf_counter() - t0) / reps * 1e6)
    return best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def agreement(cp, gpu_out, cpu_out) -> str:
    if cpu_out is None:
        return ""
    y_g, dx_g = (cp.asnumpy(a).astype(np.float64) for a in gpu_out)
    y_c, dx_c = (np.asarray(a, np.float64).reshape(-1) for a in cpu_out)
    if y_g.shape != y_c.shape or dx_g.shape != dx_c.shape:
        return f"CPU vs GPU: shapes differ {y_c.shape}/{y_g.shape}, {dx_c.shape}/{dx_g.shape}"
    ry = np.max(np.abs(y_g - y_c) / np.maximum(np.abs(y_c), 1e-30)) if y_c.size else 0.0
    dscale = max(float(np.max(np.abs(dx_c))), 1e-30) if dx_c.size else 1.0
    rdx = float(np.max(np.abs(dx_g - dx_c))) / dscale if dx_c.size else 0.0
    return f"CPU vs GPU: Y max rel diff {ry:.2e}, dX max diff / max|dX| {rdx:.2e}"


def bench_pairs(cp, rlc, name: str, bar: float, reps: int) -> bool:
    x, label, dy, lengths = workload(name)
    pairs = label_differing_pairs(label, lengths)
    gx, gl, gdy = cp.asarray(x), cp.asarray(label), cp.asarray(dy)
    glen = None if lengths is None else cp.asarray(lengths)
    fwd = lambda: rlc.pairwise_loss_forward_cuda(gx, gl, glen)  # noqa: E731
    grad = lambda: rlc.pairwise_loss_gradient_cuda(gx, gl, gdy, glen)  # noqa: E731
    both = lambda: (fwd(), grad())  # noqa: E731
    t_f = gpu_seconds(cp, fwd, reps)
    t_g = gpu_seconds(cp, grad, reps)
    t_b = gpu_seconds(cp, both, reps)
    rate = pairs / t_b
    n_sessions = 1 if lengths is None else len(lengths)
    print(f"{name}-GPU: N={x.shape[0]} in {n_sessions} session(s), {pairs:,} label-differing "
          f"pairs (labels uniform in [0,1))")
    print(f"  forward {t_f * 1e3:8.3f} ms  gradient {t_g * 1e3:8.3f} ms  "
          f"forward+gradient {t_b * 1e3:8.3f} ms")
    ok = rate >= bar
    print(f"  {rate / 1e9:8.1f} G pairs/s (bar >= {bar / 1e9:.0f} G)  {verdict(ok)}")
    kernels = rlc._kernels(cp, cp.cuda.Device().id)
    for label_, waves in (("forward", 8), ("gradient", 4)):
        p = kernels.plan(x.shape[0], n_sessions, waves, None, None)
        print(f"  {label_} plan: tile {p.tile}, chunks {p.chunks}, grid {p.n_blocks} x "
              f"{p.chunks}{' (single launch)' if p.direct_only else ''}")
    times, cpu_out, note = cpu_times(name)
    if times is None:
        print(f"  {note}")
    else:
        t_cpu = times["fwd"] + times["grad"]
        print(f"  CPU kernel forward+gradient {t_cpu * 1e3:.1f} ms (forward "
              f"{times['fwd'] * 1e3:.1f} ms, which also prepares the gradient; gradient {times['grad'] * 1e3:.1f} ms)"
              f" -> GPU speed-up x{t_cpu / t_b:.0f}")
        print("  " + agreement(cp, both(), cpu_out))
    sweep(cp, rlc, name, gx, gl, gdy, glen, pairs)
    return ok


SWEEPS = {"W1": [(256, 16), (256, 32), (256, 53), (256, 79), (128, 40), (128, 79), (64, 79)],
          "W2": [(64, 1), (128, 1), (256, 1), (128, 2)]}


def sweep(cp, rlc, name, gx, gl, gdy, glen, pairs) -> None:
    """Info only: forward+gradient rate for other (tile, chunks) plans, for later tuning."""
    if time_left(reserve=60.0) < 0:
        return
    cells = []
    for tile, chunks in SWEEPS[name]:
        def both(tile=tile, chunks=chunks):
            rlc.pairwise_loss_forward_cuda(gx, gl, glen, tile=tile, chunks=chunks)
            rlc.pairwise_loss_gradient_cuda(gx, gl, gdy, glen, tile=tile, chunks=chunks)
        t = gpu_seconds(cp, both, reps=5, warmup=1)
        cells.append(f"T{tile}/K{chunks} {pairs / t / 1e9:.0f}G")
    print("  other plans (fwd+grad): " + ", ".join(cells))


def bench_small(cp, rlc) -> bool:
    x, label, dy, lengths = workload("W3")
    gx, gl, gdy = cp.asarray(x), cp.asarray(label), cp.asarray(dy)
    fwd_us = host_us_per_call(cp, lambda: rlc.pairwise_loss_forward_cuda(gx, gl, None))
    grad_us = host_us_per_call(cp, lambda: rlc.pairwise_loss_gradient_cuda(gx, gl, gdy, None))
    dev_f = gpu_seconds(cp, lambda: rlc.pairwise_loss_forward_cuda(gx, gl, None), 200) * 1e6
    dev_g = gpu_seconds(cp, lambda: rlc.pairwise_loss_gradient_cuda(gx, gl, gdy, None), 200) * 1e6
    ok = fwd_us < BAR_W3_US and grad_us < BAR_W3_US
    print("W3-GPU: one 64-item session, per call (back-to-back calls, one final sync)")
    print(f"  functions: forward {fwd_us:6.1f} us, gradient {grad_us:6.1f} us "
          f"(bar < {BAR_W3_US:.0f} us each)  {verdict(ok)}   [device-event time: "
          f"{dev_f:.1f} / {dev_g:.1f} us]")
    times, _, note = cpu_times("W3")
    if times is None:
        print(f"  {note}")
    else:
        print(f"  CPU kernel: forward {times['fwd'] * 1e6:.1f} us, gradient "
              f"{times['grad'] * 1e6:.1f} us per call -> GPU speed-up x"
              f"{times['fwd'] * 1e6 / fwd_us:.2f} / x{times['grad'] * 1e6 / grad_us:.2f}")
    ok_op = bench_small_op(cp, x, label, dy)
    return ok and ok_op


def bench_small_op(cp, x, label, dy) -> bool:
    """W3 through Workspace.run_operator_once, when a CUDA PairWiseLoss is registered."""
    from c2lite import Workspace, core  # noqa: PLC0415
    from c2lite.device import CUDA  # noqa: PLC0415
    from c2lite.registry import has_implementation  # noqa: PLC0415
    if not has_implementation("PairWiseLoss", CUDA):
        print("  run_operator_once: no CUDA PairWiseLoss registered yet (skipped)")
        return True
    cuda0 = core.DeviceOption(CUDA, 0)
    ws = Workspace("gpu_check_w3")
    for blob, value in (("X", x), ("label", label), ("dY", dy)):
        ws.feed_blob(blob, value, device_option=cuda0)
    ok = True
    rows = [("PairWiseLoss", ["X", "label"], ["Y"]),
            ("PairWiseLossGradient", ["X", "label", "dY"], ["dX"])]
    for op_type, inputs, outputs in rows:
        if not has_implementation(op_type, CUDA):
            print(f"  run_operator_once({op_type}): no CUDA kernel registered (skipped)")
            continue
        op = core.CreateOperator(op_type, inputs, outputs, device_option=cuda0)
        try:
            us = host_us_per_call(cp, lambda: ws.run_operator_once(op), reps=500)
        except Exception as exc:  # noqa: BLE001
            print(f"  run_operator_once({op_type}) failed: {type(exc).__name__}: {exc}")
            ok = False
            continue
        good = us < BAR_W3_US
        ok = ok and good
        print(f"  run_operator_once({op_type}): {us:6.1f} us per call "
              f"(bar < {BAR_W3_US:.0f} us)  {verdict(good)}")
    return ok


def main(argv) -> int:
    run_tests = "--no-tests" not in argv
    try:
        import cupy as cp  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        print(f"gpu_check: CuPy is not importable ({type(exc).__name__}: {exc}); this script "
              "needs a CUDA GPU with CuPy installed. Nothing was checked.")
        return 2
    from c2lite.device import has_gpu_support  # noqa: PLC0415
    if not has_gpu_support():
        print("gpu_check: CuPy imports but sees no usable CUDA device; nothing was checked.")
        return 2
    t_start = time.perf_counter()
    _DEADLINE[0] = t_start + TOTAL_BUDGET_S
    environment(cp)
    tests_ok = run_pytest() if run_tests else True
    from c2lite.ops import _rank_loss_cuda as rlc  # noqa: PLC0415
    print("\n== PairWiseLoss CUDA benchmark (forward + gradient; CUDA events, after warm-up)")
    results = {
        "W1": bench_pairs(cp, rlc, "W1", BAR_W1_PAIRS_PER_S, reps=20),
        "W2": bench_pairs(cp, rlc, "W2", BAR_W2_PAIRS_PER_S, reps=10),
        "W3": bench_small(cp, rlc),
    }
    print("\n== summary")
    print(f"pytest -m cuda: {verdict(tests_ok) if run_tests else 'not run (--no-tests)'}")
    for name, ok in results.items():
        print(f"{name}-GPU bars: {verdict(ok)}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0 if tests_ok and all(results.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cpu-time":
        cpu_child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))

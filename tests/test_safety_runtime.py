"""Safety of running: failures mid-net, mid-plan and mid-DAG, and concurrent use.

When op k fails: ops before it have run, nothing op k would write is touched (its outputs
keep their old values, or stay empty), the error names op k (index, type, name, net, blob),
exactly one error reaches the caller, and the same net (or plan) runs again once its input
is fixed. Separate workspaces run in parallel threads with single-threaded results; one net
object is never run by two threads at once.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import c2lite
import c2lite.ops.rank_loss  # noqa: F401  (registers PairWiseLoss, not yet in c2lite.ops)
from c2lite import core
from c2lite.errors import EnforceError
from c2lite.operator import Operator
from c2lite.registry import register_cpu
from c2lite.schema import OPERATOR_SCHEMA

# ----------------------------------------------------------------------------------------
# Instrumented ops (fail on a negative input, so "fix the input" is a feed_blob away)
# ----------------------------------------------------------------------------------------

EVENTS: list[tuple[str, str, float, str]] = []
_EVENTS_LOCK = threading.Lock()


def _record(op: Operator, what: str) -> None:
    with _EVENTS_LOCK:
        EVENTS.append((op.name or op.type, what, time.monotonic(),
                       threading.current_thread().name))


def _events(name: str, what: str) -> list[float]:
    with _EVENTS_LOCK:
        return [t for n, w, t, _ in EVENTS if n == name and w == what]


@pytest.fixture(autouse=True)
def _clear_events():
    with _EVENTS_LOCK:
        EVENTS.clear()
    yield


def _refuse_negative(op: Operator, x: Any, blob: str) -> None:
    if np.any(np.asarray(x) < 0):
        raise EnforceError(f"{op.type} needs non-negative values", blob=blob)


OPERATOR_SCHEMA("SafetySleepCopy").NumInputs(1).NumOutputs(1)


@register_cpu("SafetySleepCopy")
class _SleepCopy(Operator):
    """Sleeps ``ms``, refuses negative input, records start/end; returns a copy."""

    def setup(self) -> None:
        self.ms = self.arg("ms", 0)

    def compute(self, x: Any) -> Any:
        _record(self, "start")
        try:
            time.sleep(self.ms / 1000)
            _refuse_negative(self, x, self.inputs[0])
            return x.copy()
        finally:
            _record(self, "end")


OPERATOR_SCHEMA("SafetyTwoOutputs").NumInputs(1).NumOutputs(2).AllowInplace({(0, 0)})


@register_cpu("SafetyTwoOutputs")
class _TwoOutputs(Operator):
    """Computes its first output, then validates the input for the second and may fail."""

    def compute(self, x: Any) -> Any:
        first = x * 2
        _record(self, "first computed")
        _refuse_negative(self, x, self.inputs[0])
        return first, x + 1


OPERATOR_SCHEMA("SafetyForeign").NumInputs(1).NumOutputs(1)


@register_cpu("SafetyForeign")
class _Foreign(Operator):
    """Fails with a non-c2lite exception on a negative input."""

    def compute(self, x: Any) -> Any:
        if np.any(x < 0):
            return 1 // 0
        return x + 0


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# ----------------------------------------------------------------------------------------
# SimpleNet
# ----------------------------------------------------------------------------------------

def _four_op_net(name: str, kind: str = "") -> core.Net:
    net = core.Net(name)
    net.Proto().type = kind
    net.Copy(["x"], ["a"], name="first")                  # op 0
    net.Sum(["a", "a"], ["b"], name="double")              # op 1
    net.SafetySleepCopy(["b"], ["c"], name="check")        # op 2: fails on negative b
    net.Copy(["c"], ["d"], name="last")                    # op 3
    return net


def test_simple_net_failure_midway_and_rerun():
    ws = c2lite.Workspace()
    ws.feed_blob("x", _f32(-1, 2))
    ws.feed_blob("c", _f32(9))           # old value of the failing op's output
    net = _four_op_net("safety_simple")
    ws.create_net(net)
    with pytest.raises(EnforceError) as info:
        ws.run_net(net.Name())
    err = info.value
    assert (err.op_index, err.op_type, err.op_name, err.net, err.blob) == \
        (2, "SafetySleepCopy", "check", "safety_simple", "b")
    text = str(err)
    for part in ("op #2 SafetySleepCopy 'check'", "in net 'safety_simple'", "(blob 'b')",
                 "needs non-negative values"):
        assert part in text
    assert ws.fetch_blob("a").tolist() == [-1, 2]          # ops before k ran
    assert ws.fetch_blob("b").tolist() == [-2, 4]
    assert ws.fetch_blob("c").tolist() == [9]              # op k's output untouched
    assert ws.get_blob("d") is None                        # op k+1 never ran
    assert _events("last", "start") == []
    assert ws.run_net(net.Name(), allow_fail=True) is False
    ws.feed_blob("x", _f32(1, 2))                          # fix the input
    assert ws.run_net(net.Name())
    assert ws.fetch_blob("d").tolist() == [2, 4]


def test_multi_output_op_never_half_writes():
    ws = c2lite.Workspace()
    ws.feed_blob("x", _f32(-3, 1))
    ws.feed_blob("out0", _f32(7, 7))                       # old value; out1 is new
    net = core.Net("safety_two_out")
    net.SafetyTwoOutputs(["x"], ["out0", "out1"], name="two")
    ws.create_net(net)
    with pytest.raises(EnforceError, match="op #0 SafetyTwoOutputs 'two'"):
        ws.run_net(net.Name())
    assert len(_events("two", "first computed")) == 1      # it did get that far
    assert ws.fetch_blob("out0").tolist() == [7, 7]
    assert not ws.has_blob("out1") or ws.get_blob("out1") is None
    # in place on its input: the input is not half-updated either
    inplace = core.Net("safety_two_out_inplace")
    inplace.SafetyTwoOutputs(["x"], ["x", "out1"], name="two_inplace")
    ws.create_net(inplace)
    with pytest.raises(EnforceError):
        ws.run_net(inplace.Name())
    assert ws.fetch_blob("x").tolist() == [-3, 1]
    ws.feed_blob("x", _f32(3, 1))
    ws.run_net(net.Name())
    assert ws.fetch_blob("out0").tolist() == [6, 2] and ws.fetch_blob("out1").tolist() == [4, 2]


def test_foreign_exception_mid_net_is_wrapped_with_op_k():
    ws = c2lite.Workspace()
    ws.feed_blob("x", _f32(-1))
    net = core.Net("safety_foreign")
    net.Copy(["x"], ["y"])
    net.SafetyForeign(["y"], ["z"], name="div")
    ws.create_net(net)
    with pytest.raises(EnforceError, match="ZeroDivisionError") as info:
        ws.run_net(net.Name())
    assert info.value.op_index == 1 and info.value.net == "safety_foreign"
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert ws.fetch_blob("y").tolist() == [-1] and ws.get_blob("z") is None
    ws.feed_blob("x", _f32(5))
    ws.run_net(net.Name())
    assert ws.fetch_blob("z").tolist() == [5]


def test_failure_then_workspace_still_serves_other_nets():
    ws = c2lite.Workspace()
    ws.feed_blob("x", _f32(-1))
    bad = _four_op_net("safety_bad")
    ws.create_net(bad)
    other = core.Net("safety_other")
    other.Sum(["x", "x"], ["twice"])
    ws.create_net(other)
    for _ in range(3):
        with pytest.raises(EnforceError):
            ws.run_net(bad.Name())
        ws.run_net(other.Name())
        assert ws.fetch_blob("twice").tolist() == [-2]
    assert ws.run_net_once(other.Proto())


# ----------------------------------------------------------------------------------------
# DAGNet
# ----------------------------------------------------------------------------------------

def _dag(name: str, workers: int = 4) -> core.Net:
    net = core.Net(name)
    net.Proto().type = "dag"
    net.Proto().num_workers = workers
    return net


def test_dag_failure_lets_in_flight_ops_finish_and_starts_nothing_new():
    ws = c2lite.Workspace()
    ws.feed_blob("good", _f32(1))
    ws.feed_blob("bad", _f32(-1))
    ws.feed_blob("failed_out", _f32(5))
    net = _dag("safety_dag_fail")
    net.SafetySleepCopy(["good"], ["slow_out"], name="slow", ms=400)       # 0: in flight
    net.SafetySleepCopy(["bad"], ["failed_out"], name="fails", ms=30)      # 1: fails early
    net.SafetySleepCopy(["slow_out"], ["after_slow"], name="after_slow")   # 2: waits for 0
    net.SafetySleepCopy(["failed_out"], ["after_fail"], name="after_fail")  # 3: waits for 1
    ws.create_net(net)
    with pytest.raises(EnforceError) as info:
        ws.run_net(net.Name())
    raised_at = time.monotonic()
    err = info.value
    assert (err.op_index, err.op_name, err.net, err.blob) == (1, "fails", net.Name(), "bad")
    [slow_end] = _events("slow", "end")
    assert slow_end <= raised_at                       # the in-flight op finished first
    assert ws.fetch_blob("slow_out").tolist() == [1]   # ... and its output was kept
    assert _events("after_slow", "start") == []        # no op started after the failure
    assert _events("after_fail", "start") == []
    assert ws.fetch_blob("failed_out").tolist() == [5]
    ws.feed_blob("bad", _f32(2))
    ws.run_net(net.Name())
    assert ws.fetch_blob("after_slow").tolist() == [1]
    assert ws.fetch_blob("after_fail").tolist() == [2]


def test_dag_two_concurrent_failures_raise_exactly_one_error(monkeypatch):
    stray: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: stray.append(args))
    ws = c2lite.Workspace()
    ws.feed_blob("bad", _f32(-1))
    net = _dag("safety_dag_two_fail")
    net.SafetySleepCopy(["bad"], ["o0"], name="fail_a", ms=50)
    net.SafetySleepCopy(["bad"], ["o1"], name="fail_b", ms=150)
    net.SafetySleepCopy(["o0"], ["o2"], name="child_a")
    ws.create_net(net)
    with pytest.raises(EnforceError) as info:
        ws.run_net(net.Name())
    assert info.value.op_name == "fail_a"  # the first failure, not a combination
    assert len(_events("fail_a", "end")) == 1 and len(_events("fail_b", "end")) == 1
    assert _events("child_a", "start") == []
    assert stray == []


def test_dag_many_concurrent_independent_ops():
    n_ops = 300
    ws = c2lite.Workspace()
    for i in range(n_ops):
        ws.feed_blob(f"in{i}", np.full(4, i, dtype=np.float32))
    net = _dag("safety_dag_wide", workers=8)
    for i in range(n_ops):
        net.Sum([f"in{i}", f"in{i}"], [f"mid{i}"])
        net.Copy([f"mid{i}"], [f"out{i}"])
    net.Sum([f"out{i}" for i in range(n_ops)], ["total"])
    ws.create_net(net)
    expected = np.full(4, 2 * sum(range(n_ops)), dtype=np.float32)
    for _ in range(5):
        ws.feed_blob("total", _f32(-1))
        ws.run_net(net.Name())
        np.testing.assert_array_equal(ws.fetch_blob("total"), expected)
    for i in (0, 1, n_ops - 1):
        assert ws.fetch_blob(f"out{i}").tolist() == [2 * i] * 4


def test_dag_nets_in_several_threads_share_the_pool_safely():
    def build(ws: c2lite.Workspace, tag: int) -> str:
        net = _dag(f"safety_dag_thread_{tag}", workers=4)
        for i in range(40):
            ws.feed_blob(f"in{i}", np.full(3, i + tag, dtype=np.float32))
            net.Sum([f"in{i}", f"in{i}"], [f"out{i}"])
        net.Sum([f"out{i}" for i in range(40)], ["total"])
        ws.create_net(net)
        return net.Name()

    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(tag: int) -> None:
        try:
            ws = c2lite.Workspace(f"w{tag}")
            name = build(ws, tag)
            for _ in range(20):
                ws.run_net(name)
            results[tag] = ws.fetch_blob("total").tolist()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 4
    for tag, total in results.items():
        assert total == [2 * sum(i + tag for i in range(40))] * 3


# ----------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------

def _counter(name: str, blob: str) -> core.Net:
    net = core.Net(name)
    net.Sum([blob, "one"], [blob])
    return net


def test_nested_plan_failure_and_rerun():
    ws = c2lite.Workspace()
    for blob in ("count", "x_out"):
        ws.feed_blob(blob, _f32(0))
    ws.feed_blob("one", _f32(1))
    ws.feed_blob("x", _f32(-4))
    first = core.Net("safety_plan_first")
    first.Copy(["one"], ["started"])
    count = _counter("safety_plan_count", "count")
    failing = core.Net("safety_plan_failing")
    failing.Copy(["x"], ["x_copy"], name="copy_x")
    failing.SafetySleepCopy(["x_copy"], ["x_out"], name="check_x")
    failing.Copy(["x_out"], ["x_final"], name="never")
    inner = core.execution_step("inner", [core.execution_step("counting", count, num_iter=3),
                                          core.execution_step("failing", failing)])
    plan = core.Plan("safety_nested_plan")
    plan.AddStep(core.execution_step("root", [core.execution_step("init", first),
                                              core.execution_step("outer", [inner])]))
    with pytest.raises(EnforceError) as info:
        ws.run_plan(plan)
    err = info.value
    assert (err.op_index, err.op_name, err.net, err.blob) == \
        (1, "check_x", "safety_plan_failing", "x_copy")
    assert ws.fetch_blob("started").tolist() == [1]
    assert ws.fetch_blob("count").tolist() == [3]
    assert ws.fetch_blob("x_copy").tolist() == [-4]
    assert ws.fetch_blob("x_out").tolist() == [0]
    assert not ws.has_blob("x_final") or ws.get_blob("x_final") is None
    ws.feed_blob("x", _f32(4))
    assert ws.run_plan(plan)
    assert ws.fetch_blob("count").tolist() == [6]
    assert ws.fetch_blob("x_final").tolist() == [4]


def _concurrent_plan(slow_iters: int) -> core.Plan:
    slow = core.Net("safety_plan_slow")
    slow.SafetySleepCopy(["one"], ["slow_tick"], name="tick", ms=20)
    slow.Sum(["slow_count", "one"], ["slow_count"])
    failing = core.Net("safety_plan_conc_fail")
    failing.SafetySleepCopy(["x"], ["conc_out"], name="conc_check", ms=30)
    par = core.execution_step("par", [core.execution_step("slow", slow, num_iter=slow_iters),
                                      core.execution_step("fails", failing)],
                              concurrent_substeps=True)
    plan = core.Plan("safety_concurrent_plan")
    plan.AddStep(par)
    return plan


def test_concurrent_substeps_failure_raises_one_error_and_rerun():
    ws = c2lite.Workspace()
    ws.feed_blob("one", _f32(1))
    ws.feed_blob("slow_count", _f32(0))
    ws.feed_blob("x", _f32(-1))
    ws.feed_blob("conc_out", _f32(8))
    plan = _concurrent_plan(slow_iters=5)
    with pytest.raises(EnforceError) as info:
        ws.run_plan(plan)
    assert info.value.op_name == "conc_check" and info.value.blob == "x"
    assert ws.fetch_blob("conc_out").tolist() == [8]
    # the plan waited for its sibling thread before raising: nothing runs afterwards
    ticks = len(_events("tick", "end"))
    time.sleep(0.1)
    assert len(_events("tick", "end")) == ticks
    assert not [t for t in threading.enumerate() if t.name.startswith("c2lite-plan")]
    ws.feed_blob("x", _f32(1))
    assert ws.run_plan(plan)
    assert ws.fetch_blob("conc_out").tolist() == [1]


def test_concurrent_substep_failure_stops_siblings():
    ws = c2lite.Workspace()
    ws.feed_blob("one", _f32(1))
    ws.feed_blob("slow_count", _f32(0))
    ws.feed_blob("x", _f32(-1))
    start = time.monotonic()
    with pytest.raises(EnforceError):
        ws.run_plan(_concurrent_plan(slow_iters=50))  # 50 x 20 ms if never stopped
    assert time.monotonic() - start < 0.6
    assert ws.fetch_blob("slow_count")[0] < 25


# ----------------------------------------------------------------------------------------
# Concurrency
# ----------------------------------------------------------------------------------------

def _loss_net(name: str) -> core.Net:
    net = core.Net(name)
    net.PairWiseLoss(["X", "label", "lengths"], ["loss"])
    net.Copy(["loss"], ["loss_copy"])
    net.Sum(["loss", "loss_copy", "bias"], ["total"])
    net.PairWiseLossGradient(["X", "label", "dY", "lengths"], ["dX"])
    net.Sum(["dX", "X"], ["X_next"])
    return net


def _loss_inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 1500, size=6).astype(np.int32)  # ~10 ms per run
    n = int(lengths.sum())
    return {"X": rng.standard_normal(n).astype(np.float32),
            "label": rng.integers(0, 4, n).astype(np.float32),
            "lengths": lengths, "dY": rng.random(6).astype(np.float32),
            "bias": rng.random(6).astype(np.float32)}


def _feed(ws: c2lite.Workspace, inputs: dict) -> None:
    for key, value in inputs.items():
        ws.feed_blob(key, value)


def _run_loss(ws: c2lite.Workspace, name: str, inputs: dict) -> dict[str, np.ndarray]:
    _feed(ws, inputs)
    ws.run_net(name)
    return {b: ws.fetch_blob(b) for b in ("loss", "total", "dX", "X_next")}


def test_separate_workspaces_in_threads_match_single_threaded():
    n_threads, runs = 4, 50
    inputs = [_loss_inputs(seed) for seed in range(n_threads)]
    expected = []
    for tag in range(n_threads):
        ws = c2lite.Workspace()
        _feed(ws, inputs[tag])
        net = _loss_net("safety_loss")
        ws.create_net(net)
        expected.append(_run_loss(ws, net.Name(), inputs[tag]))
    mismatches: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def worker(tag: int) -> None:
        try:
            ws = c2lite.Workspace(f"thread{tag}")
            _feed(ws, inputs[tag])
            net = _loss_net("safety_loss")
            ws.create_net(net)
            barrier.wait()
            for run in range(runs):
                got = _run_loss(ws, net.Name(), inputs[tag])
                for key, value in expected[tag].items():
                    # the kernel's helper threads may sum partial results in another order
                    if got[key].shape != value.shape or not np.allclose(
                            got[key], value, rtol=1e-6, atol=1e-7, equal_nan=True):
                        mismatches.append(f"thread {tag} run {run} blob {key}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:1]
    assert not mismatches, mismatches[:5]


OPERATOR_SCHEMA("SafetyTrace").NumInputs(1).NumOutputs(1).AllowInplace({(0, 0)})


@register_cpu("SafetyTrace")
class _Trace(Operator):
    """Appends (thread, op name) to a trace and yields the GIL mid-op."""

    trace: list[tuple[str, str]] = []
    lock = threading.Lock()

    def compute(self, x: Any) -> Any:
        me = threading.current_thread().name
        with _Trace.lock:
            _Trace.trace.append((me, self.name + ":in"))
        time.sleep(0.002)
        with _Trace.lock:
            _Trace.trace.append((me, self.name + ":out"))
        return x + 1


@pytest.mark.parametrize("kind", ["simple", "dag"])
def test_one_net_from_two_threads_is_never_interleaved(kind):
    ws = c2lite.Workspace()
    ws.feed_blob("v", _f32(0))
    net = core.Net(f"safety_trace_{kind}")
    net.Proto().type = kind
    ops = [f"t{i}" for i in range(4)]
    for name in ops:
        net.SafetyTrace(["v"], ["v"], name=name)
    built = ws.create_net(net)
    _Trace.trace = []
    runs = 15

    def worker() -> None:
        for _ in range(runs):
            built.run()

    threads = [threading.Thread(target=worker, name=f"runner{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    trace = _Trace.trace
    per_run = 2 * len(ops)
    expected_names = [f"{n}:{w}" for n in ops for w in ("in", "out")]
    # runs back to back: t0..t3 of one run, then t0..t3 of the next, never mixed
    assert [name for _, name in trace] == expected_names * (2 * runs)
    if kind == "simple":  # ops run on the calling thread: each run is one runner's block
        for start in range(0, len(trace), per_run):
            assert len({thread for thread, _ in trace[start:start + per_run]}) == 1
    assert ws.fetch_blob("v").tolist() == [2 * runs * len(ops)]

"""Nets (simple, dag, checks, failures) and plans."""
import threading
import time

import numpy as np
import pytest

import c2lite
from c2lite import core, workspace
from c2lite.errors import EnforceError
from c2lite.net import DAGNet, SimpleNet, dependencies
from c2lite.operator import Operator
from c2lite.proto import caffe2_pb2
from c2lite.registry import register_cpu
from c2lite.schema import OPERATOR_SCHEMA


def _chain_net(name, kind=""):
    net = core.Net(name)
    net.Proto().type = kind
    a = net.ConstantFill([], "a", shape=[3], value=1.0)
    b = net.ConstantFill([], "b", shape=[3], value=2.0)
    c = net.Sum([a, b], "c")
    d = net.Sum([a, a], "d")  # independent of c
    net.Sum([c, d], "e")
    net.Copy(["e"], ["a"])  # overwrites a after its readers
    net.Sum(["a", "b"], "f")
    return net


def test_simple_and_dag_agree():
    results = []
    for kind in ["simple", "dag", "async_scheduling", ""]:
        ws = c2lite.Workspace()
        net = _chain_net(f"agree_{kind or 'none'}", kind)
        built = ws.create_net(net)
        assert isinstance(built, DAGNet if kind in ("dag", "async_scheduling") else SimpleNet)
        ws.run_net(net.Name(), num_iter=2)
        results.append({b: ws.fetch_blob(b).tolist() for b in ws.blobs()})
    assert all(r == results[0] for r in results)
    assert results[0]["f"] == [7.0] * 3


def test_dependencies_raw_waw_war_and_control_input():
    net = caffe2_pb2.NetDef()
    net.op.extend([
        core.CreateOperator("Copy", ["x"], ["y"]),       # 0
        core.CreateOperator("Copy", ["x"], ["z"]),       # 1
        core.CreateOperator("Copy", ["y"], ["x"]),       # 2 RAW on y(0), WAR on x (0, 1)
        core.CreateOperator("Copy", ["w"], ["y"], control_input=["z"]),  # 3 WAW y, WAR y, ctrl z
    ])
    deps = dependencies(net)
    assert deps == [set(), set(), {0, 1}, {0, 1, 2}]


def test_unknown_net_type_and_external_checks():
    ws = c2lite.Workspace()
    bad = core.Net("badtype")
    bad.Proto().type = "warp_drive"
    with pytest.raises(EnforceError, match="unknown net type 'warp_drive'"):
        ws.create_net(bad)
    ws.feed_blob("x", np.ones(1, dtype=np.float32))
    ext = caffe2_pb2.NetDef(name="ext")
    ext.external_input.append("x")
    ext.op.append(core.CreateOperator("Sum", ["x", "y"], ["z"]))
    ws.feed_blob("y", np.ones(1, dtype=np.float32))
    with pytest.raises(EnforceError, match="op Sum: Source for input y is unknown for net ext"):
        ws.create_net(ext)
    out = caffe2_pb2.NetDef(name="ext_out")
    out.op.append(core.CreateOperator("Copy", ["x"], ["z"]))
    out.external_output.append("nope")
    with pytest.raises(EnforceError, match="declared as output but never produced by the net "
                                           "ext_out, the first one is nope"):
        ws.create_net(out)
    node = caffe2_pb2.NetDef(name="node")
    node.op.append(core.CreateOperator("Copy", ["x"], ["z"],
                                       device_option=core.DeviceOption(0, node_name="n1")))
    with pytest.raises(EnforceError, match="node_name must be empty"):
        ws.create_net(node)


def _failing_net(kind):
    net = core.Net(f"failing_{kind}")
    net.Proto().type = kind
    net.Copy(["x"], ["before"])            # op 0
    net.Sum(["x", "bad"], "broken")        # op 1 fails while bad has the wrong shape
    net.Copy(["x"], ["after"])             # op 2 (independent in a dag)
    return net


@pytest.mark.parametrize("kind", ["simple", "dag"])
def test_failure_midnet_leaves_workspace_usable(kind):
    ws = c2lite.Workspace()
    ws.feed_blob("x", np.ones(3, dtype=np.float32))
    ws.feed_blob("bad", np.ones(4, dtype=np.float32))
    ws.feed_blob("broken", np.array([42.0]))
    net = _failing_net(kind)
    ws.create_net(net)
    with pytest.raises(EnforceError) as info:
        ws.run_net(net.Name())
    err = info.value
    assert err.op_index == 1 and err.op_type == "Sum" and err.net == net.Name()
    assert err.blob == "bad" and "op #1 Sum" in str(err)
    assert ws.fetch_blob("before").tolist() == [1, 1, 1]
    assert ws.fetch_blob("broken").tolist() == [42.0]  # untouched
    if kind == "simple":
        assert ws.get_blob("after") is None  # never ran
    ws.feed_blob("bad", np.full(3, 2, dtype=np.float32))
    assert ws.run_net(net.Name())
    assert ws.fetch_blob("broken").tolist() == [3, 3, 3]


def test_foreign_exceptions_are_wrapped_with_op_context():
    OPERATOR_SCHEMA("RaisesValueErrorTest").NumInputs(0).NumOutputs(1)

    @register_cpu("RaisesValueErrorTest")
    class Boom(Operator):
        def compute(self):
            raise ValueError("kaput")

    ws = c2lite.Workspace()
    with pytest.raises(EnforceError, match="ValueError: kaput") as info:
        ws.run_operator_once(core.CreateOperator("RaisesValueErrorTest", [], ["y"], name="bm"))
    assert info.value.op_name == "bm" and isinstance(info.value.__cause__, ValueError)


OPERATOR_SCHEMA("SleepCopyTest").NumInputs(1).NumOutputs(1)


@register_cpu("SleepCopyTest")
class _SleepCopy(Operator):
    active = 0
    peak = 0
    lock = threading.Lock()

    def compute(self, x):
        with _SleepCopy.lock:
            _SleepCopy.active += 1
            _SleepCopy.peak = max(_SleepCopy.peak, _SleepCopy.active)
        time.sleep(0.05)
        with _SleepCopy.lock:
            _SleepCopy.active -= 1
        return x.copy()


def test_dag_runs_independent_ops_concurrently():
    ws = c2lite.Workspace()
    ws.feed_blob("x", np.ones(2, dtype=np.float32))
    net = core.Net("concurrent_dag")
    net.Proto().type = "dag"
    net.Proto().num_workers = 4
    for i in range(4):
        net.SleepCopyTest(["x"], [f"y{i}"])
    net.Sum([f"y{i}" for i in range(4)], "total")
    ws.create_net(net)
    _SleepCopy.peak = 0
    ws.run_net(net.Name())
    assert _SleepCopy.peak >= 2
    assert ws.fetch_blob("total").tolist() == [4, 4]


def test_same_net_from_two_threads_is_serialized():
    ws = c2lite.Workspace()
    ws.feed_blob("x", np.ones(2, dtype=np.float32))
    net = core.Net("serialized_net")
    net.SleepCopyTest(["x"], ["y"])
    net.SleepCopyTest(["y"], ["z"])
    ws.create_net(net)
    _SleepCopy.peak = 0
    threads = [threading.Thread(target=ws.run_net, args=(net.Name(),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _SleepCopy.peak == 1


def _counter_net(name, blob="count"):
    net = core.Net(name)
    net.Sum([blob, "one"], blob)
    return net


def test_plan_num_iter_runs_nets_that_many_times():
    ws = c2lite.Workspace()
    ws.feed_blob("count", np.zeros(1, dtype=np.float32))
    ws.feed_blob("one", np.ones(1, dtype=np.float32))
    net = _counter_net("plan_counter")
    plan = core.Plan("p")
    plan.AddStep(core.execution_step("s", net, num_iter=7))
    assert ws.run_plan(plan)
    assert ws.fetch_blob("count").tolist() == [7]
    # Nets are created once and reused; running the plan again adds 7 more.
    ws.run_plan(plan)
    assert ws.fetch_blob("count").tolist() == [14]


def test_plan_substeps_should_stop_and_concurrency():
    ws = c2lite.Workspace()
    for blob in ("a", "b", "count"):
        ws.feed_blob(blob, np.zeros(1, dtype=np.float32))
    ws.feed_blob("one", np.ones(1, dtype=np.float32))
    ws.feed_blob("limit", np.full(1, 5, dtype=np.float32))
    stop = core.Net("stopper")
    stop.Sum(["count", "one"], "count")
    stop.GivenTensorBoolFill([], "stop_now", shape=[], values=[False])
    s1 = core.execution_step("loop", [stop], should_stop_blob="stop_now", only_once=True)
    par = core.execution_step("par", [core.execution_step("sa", _counter_net("pa", "a"), num_iter=3),
                                      core.execution_step("sb", _counter_net("pb", "b"), num_iter=4)],
                              concurrent_substeps=True)
    plan = core.Plan("p2")
    plan.AddStep(core.execution_step("root", [s1, par]))
    ws.run_plan(plan)
    assert ws.fetch_blob("count").tolist() == [1]
    assert ws.fetch_blob("a").tolist() == [3] and ws.fetch_blob("b").tolist() == [4]


def test_plan_should_stop_blob_loops_until_true():
    ws = c2lite.Workspace()
    ws.feed_blob("count", np.zeros(1, dtype=np.float32))
    ws.feed_blob("one", np.ones(1, dtype=np.float32))
    ws.feed_blob("stop", np.array(False))
    net = _counter_net("loop_counter")
    plan = caffe2_pb2.PlanDef(name="loop")
    plan.network.add().CopyFrom(net.Proto())
    step = plan.execution_step.add(name="until", should_stop_blob="stop")
    step.network.append(net.Name())
    calls = {"n": 0}
    real = ws.create_net

    def create_and_wrap(net_def, overwrite=False):
        built = real(net_def, overwrite)
        original = built.run

        def run():
            original()
            calls["n"] += 1
            if calls["n"] == 4:
                ws.feed_blob("stop", np.array(True))
            return True
        built.run = run
        return built
    ws.create_net = create_and_wrap
    ws.run_plan(plan)
    assert ws.fetch_blob("count").tolist() == [4]


def test_plan_errors():
    ws = c2lite.Workspace()
    plan = caffe2_pb2.PlanDef(name="bad")
    plan.execution_step.add(name="s").network.append("ghost")
    with pytest.raises(EnforceError, match="ExecutionStep s uses undefined net ghost"):
        ws.run_plan(plan)
    dup = caffe2_pb2.PlanDef(name="dup")
    dup.network.add(name="n")
    dup.network.add(name="n")
    with pytest.raises(EnforceError, match="networks of the same name"):
        ws.run_plan(dup)
    both = caffe2_pb2.PlanDef(name="both")
    both.network.add(name="n")
    st = both.execution_step.add(name="s", num_iter=2, should_stop_blob="x")
    st.network.append("n")
    with pytest.raises(EnforceError, match="num_iter"):
        ws.run_plan(both)
    assert ws.run_plan(caffe2_pb2.PlanDef(name="empty"))
    with pytest.raises(AssertionError):
        core.execution_step("x", [], num_iter=2, should_stop_blob="s")


def test_plan_failure_raises_with_op_context():
    ws = c2lite.Workspace()
    ws.feed_blob("a", np.ones(2, dtype=np.float32))
    ws.feed_blob("b", np.ones(3, dtype=np.float32))
    net = core.Net("plan_fail")
    net.Sum(["a", "b"], "c")
    with pytest.raises(EnforceError, match="op #0 Sum"):
        workspace.C().run_plan(core.Plan(core.execution_step("s", net)))


def test_run_plan_global_wraps_execution_step():
    workspace.ResetWorkspace()
    workspace.FeedBlob("count", np.zeros(1, dtype=np.float32))
    workspace.FeedBlob("one", np.ones(1, dtype=np.float32))
    assert workspace.RunPlan(core.execution_step("st", _counter_net("global_plan"), num_iter=2))
    assert workspace.FetchBlob("count").tolist() == [2]
    workspace.ResetWorkspace()


def test_plan_step_with_substeps_repeats_num_iter_times():
    ws = c2lite.Workspace()
    ws.feed_blob("count", np.zeros(1, dtype=np.float32))
    ws.feed_blob("one", np.ones(1, dtype=np.float32))
    inner = core.execution_step("inner", _counter_net("substep_counter"), num_iter=2)
    ws.run_plan(core.Plan(core.execution_step("outer", [inner], num_iter=3)))
    assert ws.fetch_blob("count").tolist() == [6]


def test_plan_num_concurrent_instances_runs_each_substep_n_times():
    ws = c2lite.Workspace()
    ws.feed_blob("count", np.zeros(1, dtype=np.float32))
    ws.feed_blob("one", np.ones(1, dtype=np.float32))
    inner = core.execution_step("inst", _counter_net("instance_counter"), num_iter=1)
    ws.run_plan(core.Plan(core.execution_step("outer", [inner], num_concurrent_instances=3)))
    assert ws.fetch_blob("count").tolist() == [3]

"""Workspace: blobs, parents, nets, and the caffe2.python.workspace function layer."""
import threading

import numpy as np
import pytest

import c2lite
from c2lite import core, workspace
from c2lite.errors import EnforceError
from c2lite.proto import caffe2_pb2


def test_feed_fetch_copies_and_sorted_blobs():
    ws = c2lite.Workspace()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert ws.feed_blob("b", x) is True
    ws.feed_blob("a", np.float32(1))
    x[0, 0] = 100  # feeding copied
    got = ws.fetch_blob("b")
    assert got[0, 0] == 0
    got[0, 1] = 55  # fetching copied
    assert ws.fetch_blob("b")[0, 1] == 1
    assert ws.blobs() == ["a", "b"]
    assert ws.has_blob("a") and not ws.has_blob("zz")


def test_feed_strings_lists_and_tensorproto():
    ws = c2lite.Workspace()
    ws.feed_blob("s", "hello")
    assert ws.fetch_blob("s") == "hello"
    ws.feed_blob("u", np.array(["a", "bc"]))
    assert ws.fetch_blob("u").dtype == object
    ws.feed_blob("l", [1.5, 2.5])
    assert ws.fetch_blob("l").tolist() == [1.5, 2.5]
    t = caffe2_pb2.TensorProto(dims=[2], data_type=caffe2_pb2.TensorProto.INT32, int32_data=[3, 4])
    ws.feed_blob("t", t)
    out = ws.fetch_blob("t")
    assert out.dtype == np.int32 and out.tolist() == [3, 4]


def test_missing_and_empty_blobs_raise_with_names():
    ws = c2lite.Workspace()
    with pytest.raises(EnforceError, match="Can't find blob: nope"):
        ws.fetch_blob("nope")
    ws.create_blob("e")
    with pytest.raises(EnforceError, match="Blob e is empty"):
        ws.fetch_blob("e")
    assert issubclass(EnforceError, RuntimeError)


def test_create_remove_rename():
    ws = c2lite.Workspace()
    ws.create_blob("a")
    ws.feed_blob("a", np.ones(2))
    ws.create_blob("a")  # idempotent: keeps value
    assert ws.fetch_blob("a").tolist() == [1, 1]
    ws.rename_blob("a", "b")
    assert ws.blobs() == ["b"]
    with pytest.raises(EnforceError, match="not a local blob"):
        ws.rename_blob("a", "c")
    ws.feed_blob("c", np.ones(1))
    with pytest.raises(EnforceError, match="already exists"):
        ws.rename_blob("b", "c")
    assert ws.remove_blob("b") is True and ws.remove_blob("b") is False
    ws.reset()
    assert ws.blobs() == []


def test_parent_workspace_read_through_and_writes():
    parent = c2lite.Workspace("parent")
    parent.feed_blob("p", np.ones(3, dtype=np.float32))
    child = c2lite.Workspace("child", parent=parent)
    assert child.has_blob("p") and child.blobs() == ["p"] and child.local_blobs() == []
    # CreateBlob of a parent's name stays the parent's blob; ops write into it.
    child.create_blob("p")
    assert child.local_blobs() == []
    child.feed_blob("one", np.ones(3, dtype=np.float32))
    child.run_operator_once(core.CreateOperator("Sum", ["p", "one"], ["p"]))
    assert parent.fetch_blob("p").tolist() == [2, 2, 2]
    # create_local_blob shadows; remove never touches the parent.
    child.create_local_blob("p")
    child.feed_blob("p", np.zeros(1, dtype=np.float32))
    assert parent.fetch_blob("p").tolist() == [2, 2, 2]
    assert child.remove_blob("p") and child.fetch_blob("p").tolist() == [2, 2, 2]
    child.feed_blob("q", np.ones(1))
    assert not parent.has_blob("q")


def test_create_net_overwrite_rules_and_run_net():
    ws = c2lite.Workspace()
    net = core.Net("overwrite_me")
    net.ConstantFill([], "x", shape=[2], value=3.0)
    name = net.Name()
    ws.create_net(net)
    with pytest.raises(EnforceError, match="I respectfully refuse to overwrite an existing net "
                                           f"of the same name \"{name}\""):
        ws.create_net(net)
    ws.create_net(net, overwrite=True)
    assert ws.nets() == [name]
    assert ws.run_net(name, num_iter=3)
    assert ws.fetch_blob("x").tolist() == [3, 3]
    with pytest.raises(EnforceError, match="does not exist"):
        ws.run_net("missing")
    nameless = caffe2_pb2.NetDef()
    with pytest.raises(EnforceError, match="Net definition should have a name."):
        ws.create_net(nameless)


def test_run_net_allow_fail_returns_false():
    ws = c2lite.Workspace()
    ws.feed_blob("a", np.ones(2, dtype=np.float32))
    ws.feed_blob("b", np.ones(3, dtype=np.float32))
    net = core.Net("fails")
    net.Sum(["a", "b"], "c")
    ws.create_net(net)
    assert ws.run_net(net.Name(), allow_fail=True) is False
    with pytest.raises(EnforceError, match="Sum: input b"):
        ws.run_net(net.Name())


def test_global_workspace_functions():
    workspace.ResetWorkspace()
    workspace.SwitchWorkspace("other_ws", create_if_missing=True)
    assert workspace.CurrentWorkspace() == "other_ws"
    workspace.FeedBlob("x", np.arange(3, dtype=np.float32))
    assert workspace.HasBlob("x") and workspace.Blobs() == ["x"]
    assert workspace.FetchBlobs(["x"])[0].tolist() == [0, 1, 2]
    workspace.blobs["y"] = np.ones(1)
    assert "y" in workspace.blobs and workspace.blobs["y"].tolist() == [1]
    workspace.SwitchWorkspace("default")
    assert not workspace.HasBlob("x")
    assert "other_ws" in workspace.Workspaces()
    with pytest.raises(RuntimeError):
        workspace.SwitchWorkspace("never_made")
    workspace.SwitchWorkspace("other_ws")
    assert workspace.ResetWorkspace() is True and workspace.Blobs() == []
    workspace.SwitchWorkspace("default")
    assert "Sum" in workspace.RegisteredOperators()
    assert workspace.StringifyProto("abc") == "abc"
    net = core.Net("stringify")
    assert workspace.StringifyProto(net) == net.Proto().SerializeToString()
    assert isinstance(workspace.has_gpu_support(), bool)
    assert workspace.NumCudaDevices() >= 0


def test_create_net_with_input_blobs_and_bytes():
    workspace.ResetWorkspace()
    net = core.Net("from_bytes")
    net.Copy(["inp"], ["out"])
    assert workspace.CreateNet(net.Proto().SerializeToString(), input_blobs=["inp"])
    workspace.FeedBlob("inp", np.ones(2, dtype=np.float32))
    assert workspace.RunNet(net.Name())
    assert workspace.FetchBlob("out").tolist() == [1, 1]
    op = core.CreateOperator("Copy", ["inp"], ["out2"])
    assert workspace.RunOperatorOnce(op.SerializeToString())
    assert workspace.RunOperatorsOnce([op, op])
    workspace.ResetWorkspace()


def test_separate_workspaces_in_threads_are_independent():
    results = {}

    def work(k):
        ws = c2lite.Workspace(f"t{k}")
        ws.feed_blob("x", np.full(1000, k, dtype=np.float32))
        net = core.Net(f"thread_net_{k}")
        net.Sum(["x", "x"], "y")
        net.Sum(["y", "x"], "z")
        ws.create_net(net)
        for _ in range(200):
            ws.run_net(net.Name())
        results[k] = ws.fetch_blob("z")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(6):
        assert np.all(results[k] == 3 * k)


def test_infer_shapes_and_types_through_schemas():
    net = core.Net("infer")
    net.FC(["X", "W", "b"], "Y")
    net.Relu("Y", "Z")
    net.ConstantFill([], "c", shape=[3, 2], value=1.0)
    shapes, types = workspace.InferShapesAndTypes(
        [net], {"X": [5, 4], "W": [3, 4], "b": [3]}, {"X": 1, "W": 1, "b": 1})
    assert shapes["Y"] == [5, 3] and shapes["Z"] == [5, 3] and shapes["c"] == [3, 2]
    assert types["X"] == caffe2_pb2.TensorProto.FLOAT
    workspace.ResetWorkspace()
    workspace.FeedBlob("X", np.zeros((2, 4), dtype=np.float64))
    workspace.FeedBlob("W", np.zeros((3, 4), dtype=np.float64))
    workspace.FeedBlob("b", np.zeros(3, dtype=np.float64))
    shapes, types = workspace.InferShapesAndTypes([net])
    assert shapes["Z"] == [2, 3] and types["X"] == caffe2_pb2.TensorProto.DOUBLE
    workspace.ResetWorkspace()

"""The caffe2.python.core front end, and a legacy script that ports by changing imports."""
import numpy as np
import pytest

from c2lite import core, workspace
from c2lite.proto import caffe2_pb2


def test_caffe2_style_script_runs_after_changing_imports():
    # Written as a caffe2.python user would; only the import lines differ.
    # from caffe2.python import core, workspace
    workspace.ResetWorkspace()
    workspace.FeedBlob("x", np.array([1.0, 2.0, 3.0], dtype=np.float32))
    net = core.Net("legacy_script")
    y = net.Copy(["x"], ["y"])
    z = net.Sum([y, "x"], "z")
    net.StopGradient(z, "w")
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("w"), [2, 4, 6])
    workspace.CreateNet(net)
    workspace.RunNet(net.Name(), 3)
    assert workspace.FetchBlob("z").tolist() == [2, 4, 6]
    assert caffe2_pb2.CPU == 0 and caffe2_pb2.CUDA == 1
    workspace.ResetWorkspace()


def test_net_names_unique_and_auto_outputs():
    a, b = core.Net("same"), core.Net("same")
    assert a.Name() == "same" and b.Name() == "same_1"
    net = core.Net("auto")
    out = net.ConstantFill([], shape=[1], value=1.0)
    assert str(out) == "auto/ConstantFill"
    out2 = net.ConstantFill([], shape=[1], value=1.0)
    assert str(out2) == "auto/ConstantFill_2"
    many = net.Copy(out, 1)
    assert str(many) == "auto/Copy:0"
    assert net.Sum([out, out2], []) is None
    # undefined string inputs become external inputs; defined ones do not
    net.Copy(["ext_in"], ["o"])
    assert [str(b) for b in net.external_inputs] == ["ext_in"]
    assert net.BlobIsDefined("o") and not net.BlobIsDefined("zzz")
    with pytest.raises(AssertionError):
        net.AddExternalOutput("zzz")
    net.AddExternalOutput("o")
    assert net.Proto().external_output == ["o"]


def test_unknown_op_attribute_error_suggests():
    net = core.Net("typo")
    with pytest.raises(AttributeError, match=r"Method Cpoy is not a registered operator. "
                                             r"Did you mean: \[Copy"):
        net.Cpoy(["a"], ["b"])


def test_blob_reference_behaviour():
    net = core.Net("refs")
    x = net.AddExternalInput("x")
    assert x == "x" and str(x) == "x" and hash(x) == hash("x")
    y = x.Copy([], "y")
    assert net.Proto().op[-1].input == ["x"] and y == "y"
    s = core.ScopedBlobReference("a")
    assert s.GetUnscopedName() == "a"
    with core.NameScope("outer"):
        with core.NameScope("inner"):
            assert str(core.ScopedBlobReference("a")) == "outer/inner/a"
            assert core.ScopedBlobReference("a").GetNameScope() == "outer/inner/"
        op = core.CreateOperator("Copy", ["p"], [core.BlobReference("q")])
        assert op.input == ["outer/p"] and op.output == ["q"]
    assert core.CurrentNameScope() == ""


def test_create_operator_argument_typing():
    net_arg = caffe2_pb2.NetDef(name="sub")
    op = core.CreateOperator("Foo", [], [], f=1.5, i=3, b=True, s="txt", by=b"raw",
                             fs=[1.0, 2.0], is_=[1, 2], ss=["a", "b"], n=net_arg,
                             arr=np.array([1, 2], dtype=np.float32), ns=[net_arg],
                             mixed_num=[1, 2.5], random_seed=7, engine="E", name="nm")
    args = {a.name: a for a in op.arg}
    assert args["f"].f == 1.5 and args["i"].i == 3 and args["b"].i == 1
    assert args["s"].s == b"txt" and args["by"].s == b"raw"
    assert list(args["fs"].floats) == [1, 2] and list(args["is_"].ints) == [1, 2]
    assert list(args["ss"].strings) == [b"a", b"b"] and args["n"].n.name == "sub"
    assert list(args["arr"].floats) == [1, 2] and args["ns"].nets[0].name == "sub"
    assert list(args["mixed_num"].floats) == [1, 2.5]
    assert op.device_option.random_seed == 7 and op.engine == "E" and op.name == "nm"
    with pytest.raises(ValueError):
        core.MakeArgument("bad", [1, "a"])
    with pytest.raises(ValueError):
        core.MakeArgument("bad", object())


def test_device_scope_and_device_option():
    opt = core.DeviceOption(caffe2_pb2.CUDA, 2)
    assert opt.device_type == 1 and opt.device_id == 2
    assert core.DeviceOption(1, cuda_gpu_id=3).device_id == 3
    with core.DeviceScope(opt):
        op = core.CreateOperator("Copy", ["a"], ["b"])
        assert op.device_option.device_id == 2
        explicit = core.CreateOperator("Copy", ["a"], ["b"], device_option=core.DeviceOption(0))
        assert explicit.device_option.device_type == 0
    assert not core.CreateOperator("Copy", ["a"], ["b"]).HasField("device_option")
    assert core.device_option_equal(core.DeviceOption(0, 1), core.DeviceOption(0, 5))
    assert not core.device_option_equal(core.DeviceOption(1, 1), core.DeviceOption(1, 5))
    assert not core.device_option_equal(opt, core.DeviceOption(1, 2, node_name="x"),
                                        ignore_node_name=False)


def test_inject_cross_device_copies():
    net = core.Net("mixed")
    net.AddExternalInput("x")
    net.Copy(["x"], ["x_gpu_copy"], device_option=core.DeviceOption(1, 0))
    net.Copy(["x_gpu_copy"], ["back"], device_option=core.DeviceOption(0))
    new_net, where = core.InjectCrossDeviceCopies(net)
    types = [op.type for op in new_net.Proto().op]
    assert types == ["CopyCPUToGPU", "Copy", "CopyGPUToCPU", "Copy"]
    assert new_net.Proto().op[1].input == ["x_gpu_0"]
    assert where["back"].device_type == 0


def test_clone_and_const_and_run_all_on_gpu():
    net = core.Net("orig")
    c = net.Const(np.array([[1, 2]], dtype=np.float32), "c")
    net.Copy(c, "d")
    clone = net.Clone("cloned", blob_remap={"d": "e"})
    assert clone.Proto().op[-1].output == ["e"]
    workspace.ResetWorkspace()
    workspace.RunNetOnce(clone)
    assert workspace.FetchBlob("e").tolist() == [[1, 2]]
    workspace.ResetWorkspace()
    clone.RunAllOnGPU(1)
    assert clone.Proto().device_option.device_id == 1


def test_plan_builder_adds_each_net_once():
    n1 = core.Net("pb1")
    s1 = core.execution_step("a", n1, num_iter=2)
    s2 = core.execution_step("b", [n1])
    plan = core.Plan("pb")
    plan.AddStep(s1)
    plan.AddStep(s2)
    assert [n.name for n in plan.Proto().network] == [n1.Name()]
    assert plan.Proto().execution_step[0].num_iter == 2
    assert core.Plan(s1).Proto().name == "a"

"""Schemas and gradient makers against real Caffe2 artefacts.

* every serialized op test of an op declared here: the forward def passes its schema and the
  maker reproduces Caffe2's gradient defs byte for byte;
* the legacy training nets: which ops pass the (late Caffe2) schemas, and the gradient graph
  the makers build for their forward part compared with the one Caffe2 wrote into them.
"""
import os

import numpy as np
import pytest

import c2lite  # noqa: F401  (registers the ops)
from c2lite import core
from c2lite.errors import DeviceError, GradientError, SchemaError
from c2lite.gradient import GetGradientForOp, GradientRegistry
from c2lite.proto import caffe2_pb2
from c2lite.schema import get_schema
from c2lite.serialization import load_net
from c2lite.workspace import Workspace

DATA = os.path.join(os.path.dirname(__file__), "data", "legacy-nets")
SERIALIZED = os.path.join(DATA, "serialized_op_tests")
TEXT = os.path.join(DATA, "text")

#: serialized op tests whose forward op (and gradient) belong to the packs under test
SERIALIZED_CASES = [
    "fc_operator_test.test_fc", "loss_ops_test.test_averaged_loss",
    "activation_ops_test.test_relu", "weighted_sum_test.test_weighted_sum",
    "conv_test.test_1x1_conv", "softmax_ops_test.test_softmax",
    "dropout_op_test.test_dropout_is_test", "concat_split_op_test.test_concat",
    "concat_split_op_test.test_split",
]


def read_def(path):
    op = caffe2_pb2.OperatorDef()
    with open(path, "rb") as f:
        op.ParseFromString(f.read())
    return op


def serialized_case(name):
    folder = os.path.join(SERIALIZED, name)
    grads = sorted(f for f in os.listdir(folder) if f.startswith("grad_"))
    return read_def(os.path.join(folder, "op.pb")), [read_def(os.path.join(folder, g))
                                                     for g in grads]


def summary(op):
    return (op.type, list(op.input), list(op.output))


@pytest.mark.parametrize("case", SERIALIZED_CASES)
def test_makers_reproduce_serialized_gradient_defs(case):
    forward, expected = serialized_case(case)
    assert get_schema(forward.type).verify(forward) is None
    # the tests asked for the gradient of output 0 only
    g_output = [forward.output[0] + "_grad"] + [None] * (len(forward.output) - 1)
    ops, g_input = GetGradientForOp(forward, g_output)
    assert [o.SerializeToString() for o in ops] == [e.SerializeToString() for e in expected], \
        (ops, expected)
    for op in ops:
        schema = get_schema(op.type)
        assert schema is not None and schema.verify(op) is None, op
    # every gradient output that names a forward input's gradient is reported in g_input
    names = {g.dense for g in g_input if g.IsDense()}
    for op in ops:
        assert {o for o in op.output if not o.startswith("_")} <= names


def test_serialized_gradient_op_as_forward_passes_schema():
    op, _ = serialized_case("softmax_ops_test.test_softmax_grad")
    assert op.type == "SoftmaxGradient" and get_schema(op.type).verify(op) is None


# -- the mnist LeNet training net (2016-03): same makers, two documented renames -------------
def test_mnist_2016_ops_pass_their_schemas():
    net = load_net(os.path.join(TEXT, "c2-notebook_mnist_lenet_train_2016-03.pbtxt"))
    checked, failures = set(), {}
    for op in net.op:
        schema = get_schema(op.type)
        if schema is None:  # data input, Accuracy, Summarize, Mul: other packs
            continue
        checked.add(op.type)
        problem = schema.verify(op)
        if problem:
            failures[op.type] = problem
    assert {"Conv", "MaxPool", "Flatten", "FC", "Relu", "Softmax", "LabelCrossEntropy",
            "AveragedLoss", "LabelCrossEntropyGradient", "SoftmaxGradient", "FCGradient",
            "ReluGradient", "ReshapeLike", "MaxPoolGradient", "ConvGradient",
            "WeightedSum"} <= checked
    # In 2016 AveragedLossGradient read only X (the loss gradient was implicitly 1); since
    # then it takes (X, dY), so the old def fails today's schema exactly as in Caffe2.
    assert failures == {"AveragedLossGradient": "Input size 1 not in range [min=2, max=2]."}


def test_mnist_2016_backward_pass_matches_caffe2():
    net = load_net(os.path.join(TEXT, "c2-notebook_mnist_lenet_train_2016-03.pbtxt"))
    ops = list(net.op)
    forward = ops[1:12]
    assert forward[-1].type == "AveragedLoss"
    grad_ops, grads = GradientRegistry.GetBackwardPass(forward, ["loss"])
    caffe2_grads = ops[12:23]
    ours = [summary(g) for g in grad_ops]
    # the seed is explicit now; 2016's AveragedLossGradient took no dY
    assert ours[0] == ("ConstantFill", ["loss"], ["loss_autogen_grad"])
    assert ours[1] == ("AveragedLossGradient", ["xent", "loss_autogen_grad"], ["xent_grad"])
    assert summary(caffe2_grads[0]) == ("AveragedLossGradient", ["xent"], ["xent_grad"])
    for mine, theirs in zip(grad_ops[2:], caffe2_grads[1:]):
        expected_type = "ResizeLike" if theirs.type == "ReshapeLike" else theirs.type
        assert summary(mine) == (expected_type, list(theirs.input), list(theirs.output))
        assert list(mine.arg) == list(theirs.arg)  # forward args copied (kernel/pad/stride)
        assert mine.is_gradient_op
    assert len(grad_ops) - 1 == len(caffe2_grads)
    for param in ["filter1", "bias1", "filter2", "bias2", "W3", "B3", "W4", "B4"]:
        assert str(grads[param]) == param + "_grad"


# -- the 2015-06 LeNet and 2016-03 AlexNet nets: older conventions ----------------------------
def _schema_failures(net):
    failures = []
    for op in net.op:
        schema = get_schema(op.type)
        if schema is not None and schema.verify(op):
            failures.append((op.type, schema.verify(op)))
    return failures


def test_older_nets_fail_exactly_where_their_conventions_changed():
    lenet = load_net(os.path.join(TEXT, "c2-notebook_mnist_lenet_train_2015-06.pbtxt"))
    alexnet = load_net(os.path.join(TEXT, "c2-notebook_alexnet2_train_2016-03.pbtxt"))
    one_output = "Output size 2 not in range [min=1, max=1]."
    three_inputs = "Input size 4 not in range [min=3, max=3]."
    assert sorted(_schema_failures(lenet)) == sorted(
        [("MaxPool", one_output)] * 2            # the old max-index second output
        + [("AveragedLoss", one_output)]          # the loss op also wrote its gradient
        + [("FCGradient", three_inputs)] * 2      # FCGradient(X, W, b, dY)
        + [("ConvGradient", "Input size 4 not in range [min=2, max=3].")] * 2)
    assert sorted(_schema_failures(alexnet)) == sorted(
        [("MaxPool", one_output)] * 3
        + [("Dropout", "Argument 'is_test' is required for Operator 'Dropout'.")] * 2
        + [("AveragedLoss", one_output)]
        + [("FCGradient", three_inputs)] * 3
        + [("LRNGradient", three_inputs)] * 2)   # LRNGradient(X, Y, scale, dY)
    # the makers check the forward def first, as Caffe2's did
    maxpool = next(op for op in alexnet.op if op.type == "MaxPool")
    with pytest.raises(GradientError, match="did not pass schema checking"):
        GetGradientForOp(maxpool, [maxpool.output[0] + "_grad", None])


def test_alexnet_backward_pass_after_modernising_the_forward_ops():
    net = load_net(os.path.join(TEXT, "c2-notebook_alexnet2_train_2016-03.pbtxt"))
    ops = list(net.op)
    loss_at = next(i for i, op in enumerate(ops) if op.type == "AveragedLoss")
    forward = []
    for op in ops[2:loss_at + 1]:  # Caffe2 used AddGradientOperators(skip=2)
        op = caffe2_pb2.OperatorDef.FromString(op.SerializeToString())
        if op.type == "MaxPool":
            del op.output[1:]
        elif op.type == "AveragedLoss":
            del op.output[1:]
        elif op.type == "Dropout":
            op.arg.append(core.MakeArgument("is_test", 0))
        forward.append(op)
    grad_ops, _ = GradientRegistry.GetBackwardPass(forward, ["loss"])
    ours = [summary(g) for g in grad_ops[2:]]  # after the seed and AveragedLossGradient
    theirs = [summary(g) for g in ops[loss_at + 1:] if g.type.endswith(("Gradient", "Grad"))
              or g.type == "ReshapeLike"]
    assert len(ours) == len(theirs) == 25
    renamed = {"ReshapeLike": "ResizeLike"}
    for (t1, in1, out1), (t2, in2, out2) in zip(ours, theirs):
        assert t1 == renamed.get(t2, t2) and out1 == out2
        if t2 == "FCGradient":      # 2016: (X, W, b, dY); now (X, W, dY)
            assert in1 == in2[:2] + in2[3:]
        elif t2 == "MaxPoolGradient":  # 2016: (X, dY, index); now (X, Y, dY)
            assert in1[0] == in2[0] and in1[2] == in2[1]
        elif t2 == "LRNGradient":   # 2016: (X, Y, scale, dY); now (X, Y, dY)
            assert in1 == in2[:2] + in2[3:]
        elif t2 == "ReluGradient":  # this net's Relu gradient read X; now it reads Y
            relu = next(o for o in forward if o.type == "Relu" and o.input[0] == in2[0])
            assert in1 == [relu.output[0], in2[1]]
        else:                       # Conv, Dropout, Softmax, LabelCrossEntropy, Flatten
            assert in1 == in2


# -- individual schema rules and makers --------------------------------------------------------
def op(type_, ins, outs, **kw):
    return core.CreateOperator(type_, ins, outs, **kw)


def verify(o):
    return get_schema(o.type).verify(o)


def test_schema_rules():
    assert verify(op("Dropout", ["x"], ["x", "m"], is_test=0)) is None
    assert verify(op("Dropout", ["x"], ["y"], is_test=1)) is None
    assert "is_test" in verify(op("Dropout", ["x"], ["y"]))
    assert verify(op("DropoutGrad", ["dy", "m"], ["dy"])) is None
    assert verify(op("Concat", ["a", "b"], ["c", "info"])) is None
    assert "Output size 1" in verify(op("Concat", ["a", "b"], ["c"]))
    assert verify(op("Reshape", ["x"], ["x", "old"], shape=[2, -1])) is None
    assert "in-place" in verify(op("Reshape", ["x"], ["y", "x"]))
    assert verify(op("Conv", ["x", "w"], ["y"], kernel=3)) is None
    assert "Input size 4" in verify(op("Conv", ["x", "w", "b", "z"], ["y"]))
    assert "in-place" in verify(op("Softmax", ["x"], ["x"]))
    assert "in-place" in verify(op("Flatten", ["x"], ["x"]))
    assert verify(op("LRN", ["x"], ["y", "scale"], size=5)) is None
    assert verify(op("Split", ["x", "lengths"], ["a", "b", "c"])) is None
    assert verify(op("ResizeLike", ["d", "like"], ["out"])) is None


def test_declared_ops_have_no_kernel_yet():
    ws = Workspace()
    ws.feed_blob("x", np.ones((1, 1, 4, 4), np.float32))
    with pytest.raises(DeviceError, match="knows its schema but has no kernel"):
        ws.run_operator_once(op("MaxPool", ["x"], ["y"], kernel=2))
    with pytest.raises(SchemaError, match="is_test"):
        ws.run_operator_once(op("Dropout", ["x"], ["y"]))


def grad(o, g_output):
    return GetGradientForOp(o, g_output)


def test_conv_maker_variants():
    ops, g = grad(op("Conv", ["X", "w", "b"], ["Y"], kernel=3, no_gradient_to_input=1),
                  ["Y_grad"])
    assert summary(ops[0]) == ("ConvGradient", ["X", "w", "Y_grad"], ["w_grad", "b_grad"])
    assert [a.name for a in ops[0].arg] == ["kernel", "no_gradient_to_input"]
    assert g[0].IsEmpty()
    ops, _ = grad(op("Conv", ["X", "w"], ["Y"], no_gradient_to_input=1), ["Y_grad"])
    assert summary(ops[0]) == ("ConvGradient", ["X", "w", "Y_grad"], ["w_grad"])
    assert [(a.name, a.i) for a in ops[0].arg] == [("no_bias", 1), ("no_gradient_to_input", 1)]


def test_pool_lrn_softmax_lce_flatten_makers():
    x = ["X"]
    cases = [
        (op("MaxPool", x, ["Y"], kernel=2), ("MaxPoolGradient", ["X", "Y", "Y_grad"], ["X_grad"])),
        (op("AveragePool", x, ["Y"], kernel=2),
         ("AveragePoolGradient", ["X", "Y", "Y_grad"], ["X_grad"])),
        (op("LRN", x, ["Y", "S"], size=5), ("LRNGradient", ["X", "Y", "Y_grad"], ["X_grad"])),
        (op("Softmax", x, ["Y"]), ("SoftmaxGradient", ["Y", "Y_grad"], ["X_grad"])),
        (op("LabelCrossEntropy", ["X", "L"], ["Y"]),
         ("LabelCrossEntropyGradient", ["X", "L", "Y_grad"], ["X_grad"])),
        (op("Flatten", x, ["Y"]), ("ResizeLike", ["Y_grad", "X"], ["X_grad"])),
        (op("Dropout", x, ["Y", "M"], is_test=0), ("DropoutGrad", ["Y_grad", "M"], ["X_grad"])),
    ]
    for fwd, expected in cases:
        g_output = ["Y_grad"] + [None] * (len(fwd.output) - 1)
        ops, g = grad(fwd, g_output)
        assert [summary(o) for o in ops] == [expected], fwd.type
        assert g[0].dense == "X_grad"
        assert list(ops[0].arg) == list(fwd.arg) and ops[0].is_gradient_op
    with pytest.raises(GradientError, match="should not call gradient for operator ResizeLike"):
        grad(op("ResizeLike", ["a", "b"], ["c"]), ["c_grad"])


def test_concat_split_reshape_makers():
    ops, g = grad(op("Concat", ["a", "b", "c"], ["y", "info"], axis=1), [None, None])
    assert ops == [] and all(x.IsEmpty() for x in g)
    ops, _ = grad(op("Concat", ["a", "b"], ["y", "info"], axis=1), ["y_grad", None])
    assert summary(ops[0]) == ("Split", ["y_grad", "info"], ["a_grad", "b_grad"])
    ops, g = grad(op("Split", ["x"], ["p", "q", "r"], axis=0), [None, "q_grad", "r_grad"])
    assert summary(ops[0]) == ("Concat", ["q_grad", "r_grad"], ["x_grad", "_x_grad_dims"])
    assert grad(op("Split", ["x"], ["p", "q"]), [None, None])[0] == []
    ops, g = grad(op("Reshape", ["x"], ["y", "old"], shape=[4, -1]), ["y_grad", None])
    assert summary(ops[0]) == ("Reshape", ["y_grad", "old"], ["x_grad", "_x_grad_dims"])
    assert len(ops[0].arg) == 0  # the forward `shape` is not copied


def test_backward_pass_through_concat_and_in_place_reshape():
    fwd = [op("Reshape", ["a"], ["a", "a_old"], shape=[-1]),
           op("Concat", ["a", "b"], ["y", "info"], axis=0),
           op("AveragedLoss", ["y"], ["loss"])]
    grad_ops, grads = GradientRegistry.GetBackwardPass(fwd, ["loss"])
    assert [summary(g) for g in grad_ops[2:]] == [
        ("Split", ["y_grad", "info"], ["a_grad", "b_grad"]),
        ("Reshape", ["a_grad", "a_old"], ["a_grad", "_a_grad_dims"])]
    assert str(grads["a"]) == "a_grad" and str(grads["b"]) == "b_grad"


def test_shape_inference():
    def infer(o, shapes):
        return get_schema(o.type).infer(o, [(s, "float32") for s in shapes])

    f = "float32"
    assert infer(op("Conv", ["x", "w", "b"], ["y"], kernel=5, pad=0, stride=1),
                 [(64, 1, 28, 28), (20, 1, 5, 5), (20,)]) == [((64, 20, 24, 24), f)]
    assert infer(op("Conv", ["x", "w"], ["y"], stride=2, pads=[1, 1, 0, 0]),
                 [(2, 3, 9, 9), (8, 3, 3, 3)]) == [((2, 8, 4, 4), f)]
    assert infer(op("Conv", ["x", "w"], ["y"], kernel=3, order="NHWC", dilation=2),
                 [(1, 10, 10, 3), (4, 3, 3, 3)]) == [((1, 6, 6, 4), f)]
    assert infer(op("MaxPool", ["x"], ["y"], kernel=2, stride=2),
                 [(64, 20, 24, 24)]) == [((64, 20, 12, 12), f)]
    assert infer(op("AveragePool", ["x"], ["y"], global_pooling=1),
                 [(2, 3, 7, 5)]) == [((2, 3, 1, 1), f)]
    assert infer(op("MaxPool", ["x"], ["y"], kernel=3, legacy_pad=3), [(1, 1, 5, 5)]) == [
        (None, f)]
    assert infer(op("ConvGradient", ["x", "w", "dy"], ["dw", "db", "dx"]),
                 [(1, 2, 5, 5), (4, 2, 3, 3), (1, 4, 3, 3)]) == [
        ((4, 2, 3, 3), f), ((4,), f), ((1, 2, 5, 5), f)]
    assert infer(op("ConvGradient", ["x", "w", "dy"], ["dw", "dx"], no_bias=1),
                 [(1, 2, 5, 5), (4, 2, 3, 3), (1, 4, 3, 3)]) == [
        ((4, 2, 3, 3), f), ((1, 2, 5, 5), f)]
    assert infer(op("Flatten", ["x"], ["y"]), [(64, 50, 4, 4)]) == [((64, 800), f)]
    assert infer(op("LabelCrossEntropy", ["x", "l"], ["y"]), [(64, 10), (64,)]) == [
        ((64,), f)]
    assert infer(op("Concat", ["a", "b"], ["y", "i"], axis=1), [(2, 3), (2, 5)]) == [
        ((2, 8), f), ((2,), "int32")]
    assert infer(op("Concat", ["a", "b"], ["y", "i"], axis=0, add_axis=1), [(2, 3), (2, 3)]) \
        == [((2, 2, 3), f), ((2,), "int32")]
    assert infer(op("Split", ["x"], ["a", "b"], axis=1, split=[1, 4]), [(2, 5)]) == [
        ((2, 1), f), ((2, 4), f)]
    assert infer(op("Split", ["x"], ["a", "b"], axis=1), [(2, 5)]) == [(None, f)] * 2
    assert infer(op("Reshape", ["x"], ["y", "old"], shape=[0, -1]), [(2, 3, 4)]) == [
        ((2, 12), f), ((3,), "int64")]
    assert infer(op("Reshape", ["x"], ["y", "old"], shape=[5, -1]), [(2, 3, 4)])[0] == (None, f)
    assert infer(op("Dropout", ["x"], ["y", "m"], is_test=0), [(3, 4)]) == [
        ((3, 4), f), ((3, 4), "bool")]
    assert infer(op("ResizeLike", ["d", "l"], ["o"]), [(12,), (3, 4)]) == [((3, 4), f)]

"""The backward-pass builder (core.IR / GradientRegistry.GetBackwardPass /
Net.AddGradientOperators): seeds, the reverse walk, the input-version checks and their errors,
gradient accumulation (dense Sum with autosplit renames, sparse Concat), in-place ops, skip=,
the returned map, and a generated graph that actually runs."""
from __future__ import annotations

import numpy as np
import pytest

from c2lite import core, workspace
from c2lite.errors import GradientError
from c2lite.gradient import (GRADIENT_NOT_IMPLEMENTED_YET, IR, NO_GRADIENT,
                             SHOULD_NOT_DO_GRADIENT, GradientMakerBase, GradientRegistry,
                             GradientSlice, has_gradient, register_gradient)
from c2lite.proto import caffe2_pb2

CUDA = caffe2_pb2.CUDA


# ---------------------------------------------------------------------------------------------
# test-only op types and makers (no kernels needed: these graphs are only built)
# ---------------------------------------------------------------------------------------------
class _ReadsInput(GradientMakerBase):
    """Like most makers: the gradient op reads the forward input and the output gradient."""

    def GetGradientDefs(self):
        return self.SingleGradientDef("BpReadsInputGradient", "", [self.I(0), self.GO(0)],
                                      [self.GI(0)])


class _ReadsOutput(GradientMakerBase):
    """Like Relu's: the gradient op reads the forward output (so in-place works)."""

    def GetGradientDefs(self):
        return self.SingleGradientDef("BpReadsOutputGradient", "", [self.O(0), self.GO(0)],
                                      [self.GI(0)])


class _Sparse(GradientMakerBase):
    """A sparse input gradient written by one op (indices and values)."""

    def GetGradientDefs(self):
        return self.SingleGradientDef("BpSparseGradient", "", [self.GO(0)],
                                      [self.GI_I(0), self.GI_V(0)])


class _ReadsStranger(GradientMakerBase):
    def GetGradientDefs(self):
        return self.SingleGradientDef("BpStrangerGradient", "", ["stranger", self.GO(0)],
                                      [self.GI(0)])


class _LocalTemp(GradientMakerBase):
    """Two grad ops: the second reads what the first wrote (allowed by check (d))."""

    def GetGradientDefs(self):
        return (self.SingleGradientDef("BpTmp1", "", [self.GO(0)], ["bp_local_tmp"])
                + self.SingleGradientDef("BpTmp2", "", ["bp_local_tmp"], [self.GI(0)]))


class _PassThroughNamedLikeGrad(GradientMakerBase):
    """No op; the input gradient is a pass-through blob named exactly <input>_grad."""

    def GetGradientDefs(self):
        self.SetDense(0, self.I(0) + "_grad")
        return []


if not has_gradient("BpReadsInput"):
    register_gradient("BpReadsInput")(_ReadsInput)
    register_gradient("BpReadsOutput")(_ReadsOutput)
    register_gradient("BpSparse")(_Sparse)
    register_gradient("BpStranger")(_ReadsStranger)
    register_gradient("BpLocalTemp")(_LocalTemp)
    register_gradient("BpPassClash")(_PassThroughNamedLikeGrad)
    NO_GRADIENT("BpNone")
    SHOULD_NOT_DO_GRADIENT("BpShouldNot")
    GRADIENT_NOT_IMPLEMENTED_YET("BpNotYet")


def op(op_type, inputs, outputs, **kwargs):
    return core.CreateOperator(op_type, [core.BlobReference(b) for b in inputs],
                               [core.BlobReference(b) for b in outputs], **kwargs)


def backward(ops, ys):
    return GradientRegistry.GetBackwardPass(ops, ys)


def summary(ops):
    return [(o.type, list(o.input), list(o.output)) for o in ops]


def seed(y):
    return ("ConstantFill", [y], [y + "_autogen_grad"])


# ---------------------------------------------------------------------------------------------
# seeds and ys
# ---------------------------------------------------------------------------------------------
def test_seed_op_is_exactly_constant_fill_of_y():
    ops, grads = backward([op("BpReadsInput", ["X"], ["Y"])], ["Y"])
    expected = caffe2_pb2.OperatorDef()
    expected.type = "ConstantFill"
    expected.name = ""
    expected.input.append("Y")
    expected.output.append("Y_autogen_grad")
    expected.arg.add(name="value", f=1.0)
    assert ops[0] == expected
    assert ops[0].SerializeToString() == expected.SerializeToString()
    assert summary(ops[1:]) == [("BpReadsInputGradient", ["X", "Y_autogen_grad"], ["X_grad"])]
    assert grads == {"Y": "Y_autogen_grad", "X": "X_grad"}


def test_seed_takes_the_device_scope_and_ignores_the_name_scope():
    option = core.DeviceOption(CUDA, 1)
    forward = [op("BpReadsInput", ["X"], ["Y"])]
    with core.DeviceScope(option), core.NameScope("ns"):
        ops, _ = backward(forward, ["Y"])
    assert ops[0].device_option == option
    assert summary(ops[:1]) == [seed("Y")]
    # the grad op itself takes the forward op's device option, not the scope's
    assert not ops[1].HasField("device_option")


def test_seeds_come_first_one_per_y():
    ops, grads = backward([op("BpReadsInput", ["X"], ["Y"]), op("BpReadsInput", ["W"], ["Z"])],
                          ["Y", "Z"])
    assert summary(ops[:2]) == [seed("Y"), seed("Z")]
    assert [o.type for o in ops[2:]] == ["BpReadsInputGradient"] * 2
    assert set(grads) == {"Y", "Z", "X", "W"}


def test_explicit_gradients_create_no_seed():
    ops, grads = backward([op("BpReadsInput", ["X"], ["Y"])], {"Y": "given"})
    assert summary(ops) == [("BpReadsInputGradient", ["X", "given"], ["X_grad"])]
    assert grads == {"Y": "given", "X": "X_grad"}
    # a mix: None entries are seeded, named ones are not
    ops, grads = backward([op("BpReadsInput", ["X"], ["Y"]), op("BpReadsInput", ["W"], ["Z"])],
                          {"Y": None, "Z": "Zg"})
    assert summary(ops)[0] == seed("Y") and sum(o.type == "ConstantFill" for o in ops) == 1
    assert grads["Z"] == "Zg" and grads["Y"] == "Y_autogen_grad"


def test_sparse_output_gradient_given_in_ys():
    ops, grads = backward([op("CopyGPUToCPU", ["P"], ["Y"])], {"Y": GradientSlice("yi", "yv")})
    assert summary(ops) == [("CopyCPUToGPU", ["yi"], ["P_grad_indices"]),
                            ("CopyCPUToGPU", ["yv"], ["P_grad_values"])]
    assert grads == {"Y": GradientSlice("yi", "yv"),
                     "P": GradientSlice("P_grad_indices", "P_grad_values")}


def test_ys_must_be_a_list_or_a_dict():
    with pytest.raises(TypeError, match=r"^ys should either be a list or a dict\.$") as info:
        backward([op("Copy", ["X"], ["Y"])], ("Y",))
    assert isinstance(info.value, GradientError) and isinstance(info.value, RuntimeError)
    with pytest.raises(TypeError):
        backward([op("Copy", ["X"], ["Y"])], "Y")


def test_returned_map_uses_blob_references():
    ops, grads = backward([op("BpSparse", ["P"], ["A"]), op("Copy", ["A"], ["L"])], ["L"])
    assert all(isinstance(k, core.BlobReference) for k in grads)
    assert isinstance(grads["L"], core.BlobReference) and isinstance(grads["A"],
                                                                     core.BlobReference)
    assert isinstance(grads["P"], GradientSlice)
    assert grads["P"] == GradientSlice("P_grad_indices", "P_grad_values")
    assert all(isinstance(x, core.BlobReference) for x in grads["P"])
    assert grads[core.BlobReference("A")] == "A_grad" and grads["L"] == "L_autogen_grad"


# ---------------------------------------------------------------------------------------------
# the reverse walk
# ---------------------------------------------------------------------------------------------
def test_ops_not_upstream_of_ys_are_skipped_without_a_maker():
    ops, grads = backward([op("NoMakerAnywhere", ["Q"], ["R"]),
                           op("BpReadsInput", ["X"], ["Y"])], ["Y"])
    assert [o.type for o in ops] == ["ConstantFill", "BpReadsInputGradient"]
    assert "Q" not in grads and "R" not in grads


def test_an_op_upstream_without_a_maker_is_an_error():
    fwd = op("NoMakerAnywhere", ["Q"], ["X"])
    with pytest.raises(GradientError) as info:
        backward([fwd, op("Copy", ["X"], ["Y"])], ["Y"])
    assert str(info.value) == ("Exception when creating gradient for [NoMakerAnywhere]:"
                               "Gradient maker for operator NoMakerAnywhere not implemented.."
                               f"\nOp: \n{fwd}")


@pytest.mark.parametrize("op_type,message", [
    ("BpShouldNot", "One should not call gradient for operator BpShouldNot."),
    ("BpNotYet", "Operator BpNotYet should have a gradient but is not implemented yet.")])
def test_special_makers_upstream_raise(op_type, message):
    with pytest.raises(GradientError) as info:
        backward([op(op_type, ["Q"], ["X"]), op("Copy", ["X"], ["Y"])], ["Y"])
    assert f"Exception when creating gradient for [{op_type}]:{message}.\nOp: \n" in \
        str(info.value)
    # not upstream: never asked, no error
    backward([op(op_type, ["Q"], ["R"]), op("Copy", ["X"], ["Y"])], ["Y"])


def test_no_gradient_ops_stop_the_pass():
    ops, grads = backward([op("BpNone", ["Q"], ["X"]), op("Copy", ["X"], ["Y"])], ["Y"])
    assert summary(ops) == [seed("Y"), ("Copy", ["Y_autogen_grad"], ["X_grad"])]
    assert "Q" not in grads and grads["X"] == "X_grad"


def test_skip_leaves_out_the_first_ops():
    net = core.Net("bp_skip")
    net.Proto().op.extend([op("BpNone", ["Q"], ["W"]),      # e.g. init ops
                           op("NoMakerAnywhere", ["W"], ["X"])])
    net.Copy(["X"], ["Y"])
    with pytest.raises(GradientError, match="NoMakerAnywhere"):
        core.Net(net.Proto()).AddGradientOperators(["Y"])
    grads = net.AddGradientOperators(["Y"], skip=2)
    assert grads == {"Y": "Y_autogen_grad", "X": "X_grad"}
    assert [o.type for o in net.Proto().op[3:]] == ["ConstantFill", "Copy"]


def test_none_never_erases_a_known_gradient():
    # X feeds BpNone (no gradient) and Copy; the Copy gradient survives the None
    ops, grads = backward([op("BpNone", ["X"], ["B"]), op("Copy", ["X"], ["A"]),
                           op("Sum", ["A", "B"], ["L"])], ["L"])
    assert grads["X"] == "X_grad"
    assert not any(o.type == "Sum" for o in ops)      # one generator only: no accumulation


def test_in_place_none_erases_the_gradient():
    # StopGradient in place on the loss: X's gradient is erased, so W gets none
    ops, grads = backward([op("Copy", ["W"], ["X"]), op("StopGradient", ["X"], ["X"])], ["X"])
    assert summary(ops) == [seed("X")]
    assert dict(grads) == {}


def test_stop_gradient_orphan_is_a_value_error():
    sg = op("StopGradient", ["X"], ["S"])
    with pytest.raises(ValueError) as info:
        backward([op("Copy", ["W"], ["X"]), sg, op("Copy", ["X"], ["L"])], ["L"])
    assert isinstance(info.value, GradientError)
    assert str(info.value) == ("StopGradient's output 'S' is orphan.\nYou typically want to "
                               "specify same input and output for\nStopGradient. Op:\n\n"
                               f"{sg}")
    # read by a later op (or in place): fine
    backward([op("StopGradient", ["X"], ["S"]), op("Copy", ["S"], ["L"])], ["L"])
    backward([op("StopGradient", ["X"], ["X"])], ["X"])


# ---------------------------------------------------------------------------------------------
# the four input checks
# ---------------------------------------------------------------------------------------------
def test_check_a_gradient_of_the_wrong_version():
    # Y is written twice; the gradient of its second version reaches the first writer
    ops = [op("BpReadsInput", ["X"], ["Y"]), op("BpReadsInput", ["W"], ["Y"]),
           op("BpReadsInput", ["Y"], ["L"])]
    with pytest.raises(GradientError) as info:
        backward(ops, ["L"])
    msg = str(info.value)
    assert msg.startswith('Gradient name "Y_grad" is expected to correspond to version 0 of '
                          '"Y", but currently we have version 1.\n\nDEBUG HELP:\n'
                          "Maybe you use same output blob twice for different ops?\n"
                          "== Version history of blob [Y]\nVersion (out) 0 <-- ")
    assert "Version (out) 1 <-- " in msg


def test_check_b_overwritten_output():
    ops = [op("BpReadsOutput", ["X"], ["Y"]), op("Copy", ["Y"], ["L"]),
           op("BpNone", ["Q"], ["Y"])]
    with pytest.raises(GradientError, match=r'^Gradient operator needs output "Y" at version 0, '
                                            r'but currently we have version 1\.\n\nDEBUG HELP'):
        backward(ops, ["L"])


def test_check_c_overwritten_input():
    ops = [op("BpReadsInput", ["X"], ["Y"]), op("BpNone", ["Q"], ["X"]),
           op("Copy", ["Y"], ["L"])]
    with pytest.raises(GradientError) as info:
        backward(ops, ["L"])
    msg = str(info.value)
    assert msg.startswith('Gradient operator needs input "X" at version 0, but currently we '
                          "have version 1.\n\nDEBUG HELP:\nMaybe the blob was overwritten by "
                          "another op?\n== Version history of blob [X]\nversion (in) 0 <-- ")


def test_check_d_blob_out_of_scope():
    fwd = op("BpStranger", ["X"], ["Y"])
    with pytest.raises(GradientError) as info:
        backward([fwd], ["Y"])
    assert str(info.value) == (f'Blob name "stranger" not in the scope of operator: {fwd}\n'
                               "and is not generated by any of the local gradient operators.")
    # blobs written by an earlier grad op of the same forward op are in scope
    ops, grads = backward([op("BpLocalTemp", ["X"], ["Y"])], ["Y"])
    assert [o.type for o in ops] == ["ConstantFill", "BpTmp1", "BpTmp2"]
    assert grads["X"] == "X_grad"


def test_in_place_op_gradient_reads_the_output_version():
    ops, grads = backward([op("BpReadsOutput", ["X"], ["X"]), op("Copy", ["X"], ["L"])], ["L"])
    assert summary(ops) == [seed("L"), ("Copy", ["L_autogen_grad"], ["X_grad"]),
                            ("BpReadsOutputGradient", ["X", "X_grad"], ["X_grad"])]
    assert grads == {"L": "L_autogen_grad", "X": "X_grad"}
    # check (b) comes before (c): a maker reading I(0) of an in-place op is checked against
    # the output version and passes (the gradient then reads the overwritten value)
    ops, _ = backward([op("BpReadsInput", ["X"], ["X"]), op("Copy", ["X"], ["L"])], ["L"])
    assert summary(ops)[-1] == ("BpReadsInputGradient", ["X", "X_grad"], ["X_grad"])


# ---------------------------------------------------------------------------------------------
# accumulation
# ---------------------------------------------------------------------------------------------
def test_two_consumers_autosplit_and_sum():
    ops, grads = backward([op("Copy", ["X"], ["A"]), op("Copy", ["X"], ["B"]),
                           op("Sum", ["A", "B"], ["L"])], ["L"])
    assert summary(ops) == [
        seed("L"),
        ("Copy", ["L_autogen_grad"], ["X_grad"]),                 # last consumer keeps X_grad
        ("Copy", ["L_autogen_grad"], ["_X_grad_autosplit_0"]),    # earlier one renamed
        ("Sum", ["X_grad", "_X_grad_autosplit_0"], ["X_grad"]),
    ]
    assert grads == {"L": "L_autogen_grad", "A": "L_autogen_grad", "B": "L_autogen_grad",
                     "X": "X_grad"}
    assert not ops[-1].is_gradient_op


def test_three_consumers_count_up():
    ops, _ = backward([op("BpReadsInput", ["X"], ["A"]), op("BpReadsInput", ["X"], ["B"]),
                       op("BpReadsInput", ["X"], ["C"]), op("Sum", ["A", "B", "C"], ["L"])],
                      ["L"])
    assert [o.output[0] for o in ops[1:4]] == ["X_grad", "_X_grad_autosplit_0",
                                               "_X_grad_autosplit_1"]
    assert summary(ops[4:]) == [("Sum", ["X_grad", "_X_grad_autosplit_0",
                                         "_X_grad_autosplit_1"], ["X_grad"])]


def test_sum_is_emitted_right_after_the_first_consumers_gradient():
    ops, _ = backward([op("BpReadsInput", ["W"], ["X"]), op("Copy", ["X"], ["A"]),
                       op("Copy", ["X"], ["B"]), op("Sum", ["A", "B"], ["L"])], ["L"])
    assert [o.type for o in ops] == ["ConstantFill", "Copy", "Copy", "Sum",
                                     "BpReadsInputGradient"]
    assert list(ops[-1].input) == ["W", "X_grad"]


def test_base_name_moves_to_input_zero_after_a_pass_through():
    # Sum passes L's gradient straight to X (registered first); Copy's grad writes X_grad
    ops, grads = backward([op("Copy", ["X"], ["A"]), op("Sum", ["X", "A"], ["L"])], ["L"])
    assert summary(ops) == [seed("L"), ("Copy", ["L_autogen_grad"], ["X_grad"]),
                            ("Sum", ["X_grad", "L_autogen_grad"], ["X_grad"])]
    assert grads["X"] == "X_grad"


def test_pass_throughs_only_sum_into_input_grad():
    # two pass-throughs and no grad op: the base name is <X>_grad
    ops, grads = backward([op("Sum", ["X"], ["A"]), op("Sum", ["X"], ["B"]),
                           op("Sum", ["A", "B"], ["L"])], ["L"])
    assert summary(ops) == [seed("L"), ("Sum", ["L_autogen_grad", "L_autogen_grad"],
                                        ["X_grad"])]
    assert grads["X"] == "X_grad"


def test_seed_is_a_generator_when_y_is_also_consumed():
    ops, grads = backward([op("Copy", ["X"], ["Y"]), op("Copy", ["Y"], ["Z"])], ["Y", "Z"])
    assert summary(ops) == [
        seed("Y"), seed("Z"),
        ("Copy", ["Z_autogen_grad"], ["_Y_grad_autosplit_0"]),
        ("Sum", ["Y_autogen_grad", "_Y_grad_autosplit_0"], ["Y_autogen_grad"]),
        ("Copy", ["Y_autogen_grad"], ["X_grad"]),
    ]
    assert grads["Y"] == "Y_autogen_grad" and grads["X"] == "X_grad"


def test_pass_through_named_like_the_base_is_an_error():
    with pytest.raises(GradientError, match=r"^The gradient output of empty gradient op can not "
                                            r"be the same as the normal name of the current "
                                            r"input gradient\.$"):
        backward([op("Copy", ["X"], ["A"]), op("BpPassClash", ["X"], ["B"]),
                  op("Sum", ["A", "B"], ["L"])], ["L"])


def test_sparse_accumulation_concatenates():
    ops, grads = backward([op("BpSparse", ["P"], ["A"]), op("BpSparse", ["P"], ["B"]),
                           op("Sum", ["A", "B"], ["L"])], ["L"])
    assert summary(ops) == [
        seed("L"),
        ("BpSparseGradient", ["L_autogen_grad"], ["_P_grad_indices_autosplit_0",
                                                  "_P_grad_values_autosplit_0"]),
        ("BpSparseGradient", ["L_autogen_grad"], ["_P_grad_indices_autosplit_1",
                                                  "_P_grad_values_autosplit_1"]),
        ("Concat", ["_P_grad_indices_autosplit_0", "_P_grad_indices_autosplit_1"],
         ["P_grad_indices_concat", "P_grad_indices_concat_split"]),
        ("Concat", ["_P_grad_values_autosplit_0", "_P_grad_values_autosplit_1"],
         ["P_grad_values_concat", "P_grad_values_concat_split"]),
    ]
    assert [(a.name, a.i) for a in ops[-1].arg] == [("axis", 0)]
    assert grads["P"] == GradientSlice("P_grad_indices_concat", "P_grad_values_concat")
    assert isinstance(grads["P"].indices, core.BlobReference)


def test_mixed_sparse_and_dense_is_an_error():
    with pytest.raises(GradientError, match=r"^Gradients for param ''P'' failed to verify: "
                                            r"Automatic aggregation of a mix of sparse and "
                                            r"dense gradients is not supported yet$"):
        backward([op("BpSparse", ["P"], ["A"]), op("Copy", ["P"], ["B"]),
                  op("Sum", ["A", "B"], ["L"])], ["L"])


def test_device_option_mismatch_is_an_error():
    gpu = core.DeviceOption(CUDA, 0)
    with pytest.raises(GradientError, match=r"^Gradients for param ''X'' failed to verify: "
                                            r"Unexpected behavior: not all grad ops have the "
                                            r"same device option\.$"):
        backward([op("Copy", ["X"], ["A"], device_option=gpu), op("Copy", ["X"], ["B"]),
                  op("Sum", ["A", "B"], ["L"])], ["L"])
    # different GPUs differ too; node_name and random_seed do not count
    with pytest.raises(GradientError, match="not all grad ops have the same device option"):
        backward([op("Copy", ["X"], ["A"], device_option=gpu),
                  op("Copy", ["X"], ["B"], device_option=core.DeviceOption(CUDA, 1)),
                  op("Sum", ["A", "B"], ["L"], device_option=gpu)], ["L"])


def test_sum_device_option_2018_rule():
    gpu = core.DeviceOption(CUDA, 1, random_seed=3)
    ops, _ = backward([op("Copy", ["X"], ["A"], device_option=gpu),
                       op("Copy", ["X"], ["B"], device_option=core.DeviceOption(CUDA, 1)),
                       op("Sum", ["A", "B"], ["L"], device_option=gpu)], ["L"])
    # copied from the first generator (B's gradient, registered first) that has one
    assert ops[-1].type == "Sum" and ops[-1].device_option == core.DeviceOption(CUDA, 1)
    # the first generator has no device option: the next one that has one is used
    cpu_seeded = core.DeviceOption(caffe2_pb2.CPU, random_seed=7)
    ops, _ = backward([op("Copy", ["X"], ["A"], device_option=cpu_seeded),
                       op("Copy", ["X"], ["B"]), op("Sum", ["A", "B"], ["L"])], ["L"])
    assert ops[-1].device_option == cpu_seeded
    # none has one: the Sum takes the current DeviceScope (it is made by CreateOperator)
    ops, _ = backward([op("Copy", ["X"], ["A"]), op("Copy", ["X"], ["B"]),
                       op("Sum", ["A", "B"], ["L"])], ["L"])
    assert not ops[-1].HasField("device_option")


def test_ir_exposes_the_ssa():
    ir = IR([op("Copy", ["X"], ["Y"]), op("Copy", ["Y"], ["Y"]), op("Copy", ["Y"], ["Z"])])
    assert [(dict(s.in_versions), dict(s.out_versions)) for s in ir.ssa] == [
        ({"X": 0}, {"Y": 0}), ({"Y": 0}, {"Y": 1}), ({"Y": 1}, {"Z": 0})]
    assert dict(ir.frontier) == {"X": 0, "Y": 1, "Z": 0}
    assert ir.input_usages["Y"][0] == [1] and ir.input_usages["Y"][1] == [2]


# ---------------------------------------------------------------------------------------------
# through core.Net, and running the generated graph
# ---------------------------------------------------------------------------------------------
def test_add_gradient_operators_appends_and_returns_the_map():
    net = core.Net("bp_front")
    a = net.Copy(["X"], ["A"])
    b = net.Copy(["X"], ["B"])
    net.Sum([a, b], ["L"])
    n_forward = len(net.Proto().op)
    grads = net.AddGradientOperators(["L"])
    assert [o.type for o in net.Proto().op[n_forward:]] == ["ConstantFill", "Copy", "Copy",
                                                            "Sum"]
    assert grads["X"] == "X_grad" and net.BlobIsDefined("X_grad")


def test_generated_graph_runs():
    workspace.ResetWorkspace()
    net = core.Net("bp_run")
    net.ConstantFill([], ["W"], shape=[2, 3], value=0.5)
    a = net.Copy(["X"], ["A"])
    b = net.Copy(["X"], ["B"])
    net.StopGradient([b], [b])                    # in place: B contributes no gradient
    net.Sum([a, b, "X", "W"], ["L"])
    grads = net.AddGradientOperators(["L"])
    assert grads["X"] == "X_grad" and grads["W"] == "L_autogen_grad" and "B" not in grads
    workspace.FeedBlob("X", np.arange(6, dtype=np.float32).reshape(2, 3))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("L"),
                                  3 * np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5)
    seed_value = workspace.FetchBlob("L_autogen_grad")
    assert seed_value.dtype == np.float32 and seed_value.shape == (2, 3)
    np.testing.assert_array_equal(seed_value, np.ones((2, 3), np.float32))
    # dL/dX = 1 (through A) + 1 (directly); B is cut off by StopGradient
    np.testing.assert_array_equal(workspace.FetchBlob("X_grad"), np.full((2, 3), 2.0))
    np.testing.assert_array_equal(workspace.FetchBlob(grads["W"]), np.ones((2, 3)))
    workspace.ResetWorkspace()


def test_generated_graph_runs_with_three_way_accumulation():
    workspace.ResetWorkspace()
    net = core.Net("bp_run3")
    a = net.Copy(["X"], ["A"])
    c = net.Copy([a], ["C"])
    net.Sum([a, c, "X"], ["L"])
    net.AddGradientOperators(["L"])
    x = np.random.RandomState(0).rand(4).astype(np.float32)
    workspace.FeedBlob("X", x)
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob("X_grad"), np.full(4, 3.0))
    np.testing.assert_allclose(workspace.FetchBlob("A_grad"), np.full(4, 2.0))
    workspace.ResetWorkspace()

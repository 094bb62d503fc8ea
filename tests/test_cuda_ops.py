"""CUDA device: blobs, copies, and CPU-vs-CUDA agreement for every op with both kernels.

Without a GPU (CI) the GPU tests skip with a reason, and asking for a CUDA op is a clear
DeviceError rather than a crash."""
import numpy as np
import pytest

import c2lite
from c2lite import core, registry, testing, workspace
from c2lite.device import CPU, CUDA
from c2lite.errors import DeviceError

GPU = workspace.has_gpu_support()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA GPU / CuPy available")
cuda_do = core.DeviceOption(CUDA, 0)
F = np.float32


def test_ops_registered_on_both_devices():
    both = registry.registered_operators(CPU) & registry.registered_operators(CUDA)
    training_net = {"ConstantFill", "GivenTensorFill", "GivenTensorIntFill", "Sum", "Copy",
                    "FC", "FCGradient", "Relu", "ReluGradient", "Sigmoid", "SigmoidGradient",
                    "AveragedLoss", "AveragedLossGradient", "WeightedSum", "Scale",
                    "PairWiseLoss", "PairWiseLossGradient", "EnsureCPUOutput"}
    assert training_net <= both
    cuda_only = registry.registered_operators(CUDA)
    assert {"CopyCPUToGPU", "CopyGPUToCPU"} <= cuda_only


@pytest.mark.skipif(GPU, reason="checks the no-GPU behaviour")
def test_without_gpu_cuda_requests_fail_clearly():
    ws = c2lite.Workspace()
    with pytest.raises(DeviceError, match="not available"):
        ws.feed_blob("x", np.ones(2, F), core.DeviceOption(CUDA, 0))
    ws.feed_blob("x", np.ones(2, F))
    ws.feed_blob("label", np.ones(2, F))
    op = core.CreateOperator("PairWiseLoss", ["x", "label"], ["y"], device_option=cuda_do)
    with pytest.raises(DeviceError, match="not available"):
        ws.run_operator_once(op)
    assert not ws.has_blob("y")


def _inputs(rng, kind):
    """Inputs for each op type, sized so their results are comparable across devices."""
    x = rng.standard_normal((6, 4)).astype(F)
    w = rng.standard_normal((3, 4)).astype(F)
    b = rng.standard_normal(3).astype(F)
    dy = rng.standard_normal((6, 3)).astype(F)
    lengths = np.array([2, 0, 3, 1], np.int32)
    scores = rng.standard_normal(6).astype(F)
    labels = rng.integers(0, 3, 6).astype(F)
    return {
        "Sum": (["a", "b"], [x, x * 2]), "Copy": (["a"], [x]), "StopGradient": (["a"], [x]),
        "Relu": (["a"], [x]), "ReluGradient": (["a", "b"], [np.maximum(x, 0), x]),
        "Sigmoid": (["a"], [x]), "SigmoidGradient": (["a", "b"], [1 / (1 + np.exp(-x)), x]),
        "FC": (["a", "w", "bias"], [x, w, b]), "FCGradient": (["a", "w", "dy"], [x, w, dy]),
        "AveragedLoss": (["a"], [x]),
        "AveragedLossGradient": (["a", "dy"], [x, np.array(0.5, F)]),
        "WeightedSum": (["a", "wa", "b", "wb"], [x, np.array([0.5], F), x, np.array([2.0], F)]),
        "Scale": (["a"], [x]),
        "PairWiseLoss": (["s", "l", "len"], [scores, labels, lengths]),
        "PairWiseLossGradient": (["s", "l", "dy", "len"],
                                 [scores, labels, rng.standard_normal(4).astype(F), lengths]),
    }[kind]


DEVICE_CHECKED = ["Sum", "Copy", "StopGradient", "Relu", "ReluGradient", "Sigmoid",
                  "SigmoidGradient", "FC", "FCGradient", "AveragedLoss", "AveragedLossGradient",
                  "WeightedSum", "Scale", "PairWiseLoss", "PairWiseLossGradient"]


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("op_type", DEVICE_CHECKED)
def test_device_checks_cpu_vs_cuda(op_type):
    rng = np.random.default_rng(0)
    names, values = _inputs(rng, op_type)
    n_out = 3 if op_type == "FCGradient" else 1
    kwargs = {"scale": 0.5} if op_type == "Scale" else {}
    op = core.CreateOperator(op_type, names, [f"out{i}" for i in range(n_out)], **kwargs)
    testing.assertDeviceChecks([testing.cpu_do, cuda_do], op, values, list(range(n_out)))


@needs_gpu
@pytest.mark.cuda
def test_feed_fetch_and_explicit_copies():
    ws = c2lite.Workspace()
    x = np.arange(6, dtype=F).reshape(2, 3)
    ws.feed_blob("x_gpu", x, cuda_do)
    got = ws.fetch_blob("x_gpu")
    assert isinstance(got, np.ndarray) and (got == x).all()
    ws.feed_blob("x_cpu", x)
    ws.run_operator_once(core.CreateOperator("CopyCPUToGPU", ["x_cpu"], ["y"],
                                             device_option=cuda_do))
    assert type(ws.get_blob("y")).__module__.startswith("cupy")
    ws.run_operator_once(core.CreateOperator("CopyGPUToCPU", ["y"], ["z"],
                                             device_option=cuda_do))
    assert isinstance(ws.get_blob("z"), np.ndarray) and (ws.fetch_blob("z") == x).all()
    # No implicit copies: a CPU op given a CUDA blob fails naming both devices.
    with pytest.raises(c2lite.EnforceError, match="runs on CPU but input blob x_gpu is on CUDA:0"):
        ws.run_operator_once(core.CreateOperator("Copy", ["x_gpu"], ["w"]))


@needs_gpu
@pytest.mark.cuda
def test_ranknet_style_net_trains_on_gpu_with_injected_copies():
    rng = np.random.default_rng(1)
    ws = c2lite.Workspace()
    with core.DeviceScope(cuda_do):
        init = core.Net("gpu_init")
        init.GivenTensorFill([], "w", shape=[1, 4], values=rng.standard_normal(4).tolist())
        init.ConstantFill([], "b", shape=[1], value=0.0)
        init.ConstantFill([], "lr", shape=[1], value=-0.1)
        init.ConstantFill([], "one", shape=[1], value=1.0)
        train = core.Net("gpu_train")
        s = train.FC(["x", "w", "b"], "s")
        y = train.PairWiseLoss([s, "label", "lengths"], "y")
        loss = train.AveragedLoss(y, "loss")
        train.AddGradientOperators([loss])
        for p in ("w", "b"):
            train.WeightedSum([p, "one", f"{p}_grad", "lr"], p)
    ws.run_net_once(init)
    x = rng.standard_normal((30, 4)).astype(F)
    label = (x @ np.array([1, -1, 0.5, 0], F) > 0).astype(F)
    for name, value in {"x": x, "label": label, "lengths": np.array([10, 20], np.int32)}.items():
        ws.feed_blob(name, value, cuda_do)
    ws.create_net(train)
    losses = []
    for _ in range(20):
        ws.run_net(train.Name())
        losses.append(float(ws.fetch_blob("loss")))
    assert losses[-1] < losses[0]

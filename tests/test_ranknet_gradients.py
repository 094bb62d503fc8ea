"""The ranking net of the gradient issue: X -> FC -> Relu -> FC -> PairWiseLoss -> AveragedLoss,
with the hidden layer also feeding a second head (so one blob has two consumers). Gradient op
names and order follow Caffe2, and parameter gradients match central finite differences."""
import numpy as np

import c2lite
from c2lite import core

F = np.float32


N_FORWARD = 7


def build():
    net = core.Net("ranknet_grad_check")
    h = net.FC(["X", "W1", "b1"], "h")
    r = net.Relu(h, "r")
    s1 = net.FC([r, "W2", "b2"], "s1")
    s2 = net.FC([r, "W3", "b3"], "s2")  # r feeds two ops -> r_grad accumulates
    score = net.Sum([s1, s2], "score")
    y = net.PairWiseLoss([score, "label", "lengths"], "Y")
    loss = net.AveragedLoss(y, "loss")
    grads = net.AddGradientOperators([loss])
    return net, grads


def test_gradient_ops_names_and_order_follow_caffe2():
    net, grads = build()
    grad_ops = net.Proto().op[N_FORWARD:]
    summary = [(op.type, list(op.input), list(op.output)) for op in grad_ops]
    assert summary == [
        ("ConstantFill", ["loss"], ["loss_autogen_grad"]),
        ("AveragedLossGradient", ["Y", "loss_autogen_grad"], ["Y_grad"]),
        ("PairWiseLossGradient", ["score", "label", "Y_grad", "lengths"], ["score_grad"]),
        ("FCGradient", ["r", "W3", "score_grad"], ["W3_grad", "b3_grad", "r_grad"]),
        ("FCGradient", ["r", "W2", "score_grad"], ["W2_grad", "b2_grad", "_r_grad_autosplit_0"]),
        ("Sum", ["r_grad", "_r_grad_autosplit_0"], ["r_grad"]),
        ("ReluGradient", ["r", "r_grad"], ["h_grad"]),
        ("FCGradient", ["X", "W1", "h_grad"], ["W1_grad", "b1_grad", "X_grad"]),
    ]
    # Sum is a pass-through: both inputs of `score` get score_grad itself, no op.
    assert grads["s1"] == "score_grad" and grads["s2"] == "score_grad"
    assert grads["r"] == "r_grad" and grads["W1"] == "W1_grad"
    assert grads["loss"] == "loss_autogen_grad"


def test_parameter_gradients_match_central_differences():
    step = 3e-3
    lengths = np.array([7, 5, 9, 3], np.int32)
    n = int(lengths.sum())
    rng = np.random.default_rng(7)
    values = {
        "label": rng.integers(0, 4, n).astype(F), "lengths": lengths,
        "W1": (rng.standard_normal((8, 5)) * 0.5).astype(F), "b1": np.full(8, 0.1, F),
        "W2": (rng.standard_normal((1, 8)) * 0.5).astype(F), "b2": np.zeros(1, F),
        "W3": (rng.standard_normal((1, 8)) * 0.5).astype(F), "b3": np.zeros(1, F),
    }
    # Keep only items whose Relu inputs all stay clear of the kink by more than one step
    # can move them, so central differences see a smooth function.
    candidates = rng.uniform(-2, 2, (400, 5)).astype(F)
    pre = candidates @ values["W1"].T + values["b1"]
    clear = np.abs(pre).min(axis=1) > 4 * step * 3
    values["X"] = candidates[clear][:n]
    assert len(values["X"]) == n
    net, _ = build()
    ws = c2lite.Workspace()
    for name, value in values.items():
        ws.feed_blob(name, value)
    ws.create_net(net)
    ws.run_net(net.Name())
    analytic = {p: ws.fetch_blob(f"{p}_grad").astype(np.float64)
                for p in ("W1", "b1", "W2", "b2", "W3", "b3")}

    forward = core.Net("ranknet_forward_only")
    forward.Proto().op.extend(net.Proto().op[:N_FORWARD])
    ws.create_net(forward)

    def loss_with(param, flat_index, delta):
        value = values[param].astype(np.float64).copy()
        value.reshape(-1)[flat_index] += delta
        ws.feed_blob(param, value.astype(F))
        ws.run_net(forward.Name())
        ws.feed_blob(param, values[param])
        return float(ws.fetch_blob("loss"))  # the difference is taken in float64

    checked = 0
    for param, grad in analytic.items():
        for k in range(grad.size):
            numeric = (loss_with(param, k, step) - loss_with(param, k, -step)) / (2 * step)
            g = grad.reshape(-1)[k]
            assert abs(g - numeric) <= 1e-3 * abs(numeric) + 2e-5, (param, k, g, numeric)
            checked += 1
    assert checked == 8 * 5 + 8 + 8 + 1 + 8 + 1

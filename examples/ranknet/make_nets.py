"""Build the RankNet example's nets with c2lite.core and save them as text protobufs.

    python examples/ranknet/make_nets.py [--out DIR] [--hidden H] [--lr LR] [--seed S]

writes three NetDefs next to this script (or into DIR):

init_net.pbtxt     the starting parameters (GivenTensorFill, seeded He initialisation), the
                   learning-rate blob LR (negative: WeightedSum adds LR * grad) and ONE.
train_net.pbtxt    X -> FC -> Relu -> FC -> PairWiseLoss(score, label, lengths) ->
                   AveragedLoss, then the backward pass from AddGradientOperators(["loss"]),
                   then one SGD step per parameter: WeightedSum([p, ONE, p_grad, LR]) -> p.
predict_net.pbtxt  the forward part only, X -> score, for evaluation.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import c2lite
from c2lite import core

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = 12
HIDDEN = 32
LEARNING_RATE = 0.3
PARAMS = ("fc1_w", "fc1_b", "fc2_w", "fc2_b")


def forward(net: core.Net) -> core.BlobReference:
    """Add the scoring MLP to ``net``; return the score blob, shape (items, 1)."""
    hidden = net.FC(["X", "fc1_w", "fc1_b"], "fc1")
    hidden = net.Relu([hidden], "relu1")
    return net.FC([hidden, "fc2_w", "fc2_b"], "score")


def build_nets(features: int = FEATURES, hidden: int = HIDDEN, lr: float = LEARNING_RATE,
               seed: int = 0) -> tuple[core.Net, core.Net, core.Net]:
    rng = np.random.default_rng(seed)
    init = core.Net("ranknet_init")
    init.GivenTensorFill([], "fc1_w", shape=[hidden, features],
                         values=rng.normal(0, np.sqrt(2.0 / features), (hidden, features))
                         .astype(np.float32))
    init.GivenTensorFill([], "fc1_b", shape=[hidden], values=np.zeros(hidden, np.float32))
    init.GivenTensorFill([], "fc2_w", shape=[1, hidden],
                         values=rng.normal(0, np.sqrt(1.0 / hidden), (1, hidden))
                         .astype(np.float32))
    init.GivenTensorFill([], "fc2_b", shape=[1], values=np.zeros(1, np.float32))
    init.ConstantFill([], "LR", shape=[1], value=-float(lr))
    init.ConstantFill([], "ONE", shape=[1], value=1.0)

    train = core.Net("ranknet_train")
    score = forward(train)
    session_loss = train.PairWiseLoss([score, "label", "lengths"], "session_loss")
    loss_blob = train.AveragedLoss([session_loss], "loss")
    grads = train.AddGradientOperators([loss_blob])
    for param in PARAMS:
        train.WeightedSum([param, "ONE", grads[param], "LR"], param)
    train.AddExternalOutput(loss_blob)

    predict = core.Net("ranknet_predict")
    predict.AddExternalOutput(forward(predict))
    return init, train, predict


def save_nets(out_dir: str = HERE, **kwargs) -> dict[str, str]:
    paths = {}
    for kind, net in zip(("init", "train", "predict"), build_nets(**kwargs)):
        path = os.path.join(out_dir, f"{kind}_net.pbtxt")
        c2lite.save_net(net, path)
        paths[kind] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Build and save the RankNet example nets.")
    parser.add_argument("--out", default=HERE, help="output folder (default: beside this script)")
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--lr", type=float, default=LEARNING_RATE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for kind, path in save_nets(args.out, hidden=args.hidden, lr=args.lr, seed=args.seed).items():
        net = c2lite.load_net(path)
        print(f"{path}: {kind} net '{net.name}', {len(net.op)} ops")


if __name__ == "__main__":
    main()

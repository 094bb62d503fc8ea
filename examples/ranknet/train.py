"""Train the RankNet example: a scoring MLP learned with Caffe2's PairWiseLoss, on c2lite.

    python examples/ranknet/train.py [--epochs 10] [--batch-sessions 16] [--lr 0.3]

Loads init_net.pbtxt / train_net.pbtxt / predict_net.pbtxt (made by make_nets.py), makes the
synthetic data with make_data.py if it is not there yet, runs the init net once, then for every
minibatch of sessions feeds X, label and lengths and runs the train net (forward, gradients and
SGD updates are all ops of that one net). Prints the loss per epoch and NDCG@10 on the test
split before and after training.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Iterator, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import c2lite  # noqa: E402

import make_data  # noqa: E402
import make_nets  # noqa: E402


def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over sessions: gain 2^rel - 1, discount 1/log2(rank + 1), ties broken by
    item order. Sessions without any relevant item (ideal DCG 0) are left out of the mean."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    total, counted, start = 0.0, 0, 0
    for n in np.asarray(lengths, dtype=np.int64):
        s, rel = scores[start:start + n], labels[start:start + n]
        start += n
        gains = 2.0 ** rel - 1.0
        top = min(k, int(n))
        ideal = float(np.sort(gains)[::-1][:top] @ discounts[:top])
        if ideal <= 0.0:
            continue
        ranked = gains[np.argsort(-s, kind="stable")][:top]
        total += float(ranked @ discounts[:top]) / ideal
        counted += 1
    return total / counted if counted else 0.0


def load_split(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        split = {key: data[key] for key in ("X", "label", "lengths")}
    split["offsets"] = np.concatenate([[0], np.cumsum(split["lengths"])]).astype(np.int64)
    return split


def minibatches(split: dict, batch_sessions: int,
                rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Shuffled minibatches of whole sessions: (X, label, lengths)."""
    order = rng.permutation(len(split["lengths"]))
    offsets = split["offsets"]
    for first in range(0, len(order), batch_sessions):
        chosen = order[first:first + batch_sessions]
        rows = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in chosen])
        yield (split["X"][rows], split["label"][rows],
               split["lengths"][chosen].astype(np.int32))


def _bar(total: int, desc: str, enabled: Optional[bool]) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        from c2lite.cli import progress_bar
        return progress_bar(total, desc, enabled)
    disable = (not enabled) if enabled is not None else None
    return tqdm(total=total, desc=desc, leave=False, disable=disable, file=sys.stderr,
                unit="batch", dynamic_ncols=True)


def ensure_inputs(data_dir: str, nets_dir: str, quiet: bool) -> None:
    if not all(os.path.exists(os.path.join(data_dir, f"{s}.npz")) for s in ("train", "test")):
        if not quiet:
            print(f"no data in {data_dir}: generating it")
        make_data.make_data(data_dir, quiet=quiet)
    if not all(os.path.exists(os.path.join(nets_dir, f"{k}_net.pbtxt"))
               for k in ("init", "train", "predict")):
        if not quiet:
            print(f"no nets in {nets_dir}: building them")
        make_nets.save_nets(nets_dir)


def train(epochs: int = 10, batch_sessions: int = 16, lr: Optional[float] = None,
          data_dir: str = make_data.DEFAULT_DIR, nets_dir: str = HERE, seed: int = 0,
          quiet: bool = False, progress: Optional[bool] = None) -> dict:
    """Train and return {"losses": [per epoch], "ndcg_before", "ndcg_after", "ndcg": [...]}."""
    say = (lambda *a: None) if quiet else print
    ensure_inputs(data_dir, nets_dir, quiet)
    init_net = c2lite.load_net(os.path.join(nets_dir, "init_net.pbtxt"))
    train_net = c2lite.load_net(os.path.join(nets_dir, "train_net.pbtxt"))
    predict_net = c2lite.load_net(os.path.join(nets_dir, "predict_net.pbtxt"))
    train_split = load_split(os.path.join(data_dir, "train.npz"))
    test_split = load_split(os.path.join(data_dir, "test.npz"))

    ws = c2lite.Workspace("ranknet")
    ws.run_net_once(init_net)
    if lr is not None:
        ws.feed_blob("LR", np.array([-lr], dtype=np.float32))
    # The nets' inputs must exist before the nets are created.
    first = next(minibatches(train_split, batch_sessions, np.random.default_rng(seed)))
    for name, value in zip(("X", "label", "lengths"), first):
        ws.feed_blob(name, value)
    ws.create_net(train_net)
    ws.create_net(predict_net)

    def evaluate() -> float:
        ws.feed_blob("X", test_split["X"])
        ws.run_net(predict_net.name)
        return ndcg_at_k(ws.fetch_blob("score"), test_split["label"], test_split["lengths"])

    rng = np.random.default_rng(seed)
    n_batches = -(-len(train_split["lengths"]) // batch_sessions)
    ndcg_before = evaluate()
    say(f"train: {len(train_split['lengths'])} sessions, {len(train_split['label'])} items; "
        f"test: {len(test_split['lengths'])} sessions; {n_batches} batches of "
        f"{batch_sessions} sessions per epoch")
    say(f"before training: test NDCG@10 {ndcg_before:.4f}")
    losses, ndcgs = [], []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        bar = _bar(n_batches, f"epoch {epoch}/{epochs}", progress)
        batch_losses = []
        for x, label, lengths in minibatches(train_split, batch_sessions, rng):
            ws.feed_blob("X", x)
            ws.feed_blob("label", label)
            ws.feed_blob("lengths", lengths)
            ws.run_net(train_net.name)
            batch_losses.append(float(ws.fetch_blob("loss")))
            bar.update(1)
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"loss {np.mean(batch_losses):.4f}")
        bar.close()
        losses.append(float(np.mean(batch_losses)))
        ndcgs.append(evaluate())
        say(f"epoch {epoch:>2}/{epochs}  loss {losses[-1]:.4f}  test NDCG@10 {ndcgs[-1]:.4f}  "
            f"({time.perf_counter() - start:.1f} s)")
    ndcg_after = ndcgs[-1] if ndcgs else ndcg_before
    say(f"after training:  test NDCG@10 {ndcg_after:.4f} ({ndcg_after - ndcg_before:+.4f}); "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "no epochs run")
    return {"losses": losses, "ndcg": ndcgs, "ndcg_before": ndcg_before,
            "ndcg_after": ndcg_after, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the c2lite RankNet example.")
    parser.add_argument("--epochs", type=int,
                        default=int(os.environ.get("RANKNET_EPOCHS", "10")),
                        help="passes over the training sessions (default 10, or $RANKNET_EPOCHS)")
    parser.add_argument("--batch-sessions", type=int, default=16,
                        help="sessions per minibatch (default 16)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: the LR blob of init_net.pbtxt)")
    parser.add_argument("--data", default=make_data.DEFAULT_DIR,
                        help="folder of train.npz/test.npz (made if missing)")
    parser.add_argument("--seed", type=int, default=0, help="minibatch shuffling seed")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")
    args = parser.parse_args()
    train(args.epochs, args.batch_sessions, args.lr, args.data, seed=args.seed,
          progress=args.progress)


if __name__ == "__main__":
    main()

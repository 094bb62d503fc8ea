"""Make the synthetic learning-to-rank data set of the RankNet example (no download).

Each session (think: one query and the documents shown for it) holds 5 to 60 items. An item is
a vector of FEATURES standard-normal features; its true quality is a hidden nonlinear function
of them plus noise, and its graded relevance 0..4 comes from cutting that quality at fixed
quantiles (most items are irrelevant, few are perfect, as in real judged data).

    python examples/ranknet/make_data.py [--out DIR] [--train-sessions N] [--test-sessions N]

writes DIR/train.npz and DIR/test.npz, each with
    X        float32 (items, FEATURES)   features, session after session
    label    float32 (items,)            graded relevance 0, 1, 2, 3 or 4
    lengths  int32   (sessions,)         items per session (sums to items)
"""
from __future__ import annotations

import argparse
import os

import numpy as np

FEATURES = 12
MIN_ITEMS, MAX_ITEMS = 5, 60
NOISE = 0.35
#: Quality quantiles where the relevance grade goes up by one (about 45/25/15/10/5 %).
GRADE_QUANTILES = (0.45, 0.70, 0.85, 0.95)
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "data")


class HiddenScorer:
    """The unknown "true quality" the model has to discover (fixed by its own seed)."""

    def __init__(self, seed: int = 1234) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=FEATURES)
        self.a /= np.linalg.norm(self.a)
        self.b = rng.normal(size=FEATURES)
        self.b -= self.b @ self.a * self.a   # orthogonal to a
        self.b /= np.linalg.norm(self.b)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        u, v = x @ self.a, x @ self.b
        return (1.3 * np.sin(1.2 * u)            # rises then saturates along a
                + 0.5 * v * v                     # extreme values along b are good
                + 0.6 * x[:, 2] * x[:, 3]         # an interaction
                + 0.5 * np.maximum(x[:, 4], 0.0))  # a one-sided effect


def make_split(n_sessions: int, rng: np.random.Generator, scorer: HiddenScorer,
               cuts: np.ndarray) -> dict[str, np.ndarray]:
    lengths = rng.integers(MIN_ITEMS, MAX_ITEMS + 1, size=n_sessions).astype(np.int32)
    n = int(lengths.sum())
    x = rng.normal(size=(n, FEATURES))
    quality = scorer(x) + rng.normal(scale=NOISE, size=n)
    label = np.searchsorted(cuts, quality, side="right").astype(np.float32)
    return {"X": x.astype(np.float32), "label": label, "lengths": lengths}


def make_data(out_dir: str = DEFAULT_DIR, train_sessions: int = 2000, test_sessions: int = 400,
              seed: int = 0, quiet: bool = False) -> tuple[str, str]:
    """Write train.npz and test.npz into ``out_dir``; return their paths."""
    rng = np.random.default_rng(seed)
    scorer = HiddenScorer()
    # Grade cut points from a large reference sample, so both splits share them.
    ref = rng.normal(size=(200_000, FEATURES))
    ref_quality = scorer(ref) + rng.normal(scale=NOISE, size=len(ref))
    cuts = np.quantile(ref_quality, GRADE_QUANTILES)
    os.makedirs(out_dir, exist_ok=True)
    ignore = os.path.join(out_dir, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w") as f:   # generated data never gets committed
            f.write("*\n")
    paths = []
    for split, count in (("train", train_sessions), ("test", test_sessions)):
        data = make_split(count, rng, scorer, cuts)
        path = os.path.join(out_dir, f"{split}.npz")
        np.savez(path, **data)
        paths.append(path)
        if not quiet:
            grades = np.bincount(data["label"].astype(int), minlength=5)
            share = " ".join(f"{g}:{c / grades.sum():.0%}" for g, c in enumerate(grades))
            print(f"{path}: {count} sessions, {len(data['label'])} items, grades {share}")
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_DIR, help="output folder (default: ./data "
                                                           "beside this script)")
    parser.add_argument("--train-sessions", type=int, default=2000)
    parser.add_argument("--test-sessions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_data(args.out, args.train_sessions, args.test_sessions, args.seed)


if __name__ == "__main__":
    main()

"""The RankNet example (examples/ranknet): shipped nets, a shortened training run, quickstart."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import c2lite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ranknet"


def _module(name: str):
    sys.path.insert(0, str(EXAMPLE))
    try:
        spec = importlib.util.spec_from_file_location(f"ranknet_{name}", EXAMPLE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ranknet-data")
    _module("make_data").make_data(str(out), train_sessions=400, test_sessions=150, quiet=True)
    return out


def test_ndcg_at_10() -> None:
    ndcg = _module("train").ndcg_at_k
    labels = np.array([3, 2, 0, 1, 0, 0], dtype=np.float32)
    lengths = np.array([4, 2], dtype=np.int32)   # second session has no relevant item: skipped
    perfect = np.array([4.0, 3.0, 1.0, 2.0, 0.0, 1.0])
    assert ndcg(perfect, labels, lengths) == pytest.approx(1.0)
    reversed_ = -perfect
    gains = 2.0 ** np.array([0, 1, 2, 3]) - 1
    disc = 1 / np.log2(np.arange(2, 6))
    expected = (gains @ disc) / (gains[::-1] @ disc)
    assert ndcg(reversed_, labels, lengths) == pytest.approx(expected)
    # ties keep item order; k cuts the list
    assert ndcg(np.zeros(6), labels, lengths, k=1) == pytest.approx(1.0)


def test_make_data_shapes_grades_and_determinism(small_data: Path, tmp_path: Path) -> None:
    with np.load(small_data / "train.npz", allow_pickle=False) as d:
        assert d["X"].dtype == np.float32 and d["X"].shape[1] == 12
        assert d["label"].dtype == np.float32 and d["lengths"].dtype == np.int32
        assert int(d["lengths"].sum()) == len(d["label"]) == len(d["X"])
        assert d["lengths"].min() >= 5 and d["lengths"].max() <= 60
        assert set(np.unique(d["label"]).tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    _module("make_data").make_data(str(tmp_path), train_sessions=400, test_sessions=150,
                                   quiet=True)
    for split in ("train", "test"):  # seeded: the same data every time
        with np.load(small_data / f"{split}.npz") as a, np.load(tmp_path / f"{split}.npz") as b:
            for key in ("X", "label", "lengths"):
                np.testing.assert_array_equal(a[key], b[key])
    assert (tmp_path / ".gitignore").read_text() == "*\n"


def test_shipped_nets_match_make_nets() -> None:
    make_nets = _module("make_nets")
    built = dict(zip(("init", "train", "predict"), make_nets.build_nets()))
    for kind, net in built.items():
        shipped = c2lite.load_net(str(EXAMPLE / f"{kind}_net.pbtxt"))
        proto = net.Proto()
        proto.name = shipped.name  # core.Net names are process-unique
        assert shipped == proto, f"{kind}_net.pbtxt is stale: rerun make_nets.py"
    train = c2lite.load_net(str(EXAMPLE / "train_net.pbtxt"))
    types = [op.type for op in train.op]
    assert types[:5] == ["FC", "Relu", "FC", "PairWiseLoss", "AveragedLoss"]
    assert "PairWiseLossGradient" in types and types.count("WeightedSum") == 4
    grad = next(op for op in train.op if op.type == "PairWiseLossGradient")
    assert list(grad.input) == ["score", "label", "session_loss_grad", "lengths"]
    assert grad.is_gradient_op


def test_short_training_learns(small_data: Path) -> None:
    result = _module("train").train(epochs=3, data_dir=str(small_data), quiet=True,
                                    progress=False)
    losses = result["losses"]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert result["ndcg_after"] > result["ndcg_before"] + 0.1, result


def test_train_script_prints_progress(small_data: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--epochs", "2",
                           "--data", str(small_data), "--progress"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "before training: test NDCG@10" in out
    assert "epoch  1/2  loss" in out and "epoch  2/2  loss" in out
    assert "after training:  test NDCG@10" in out
    assert "epoch 2/2" in proc.stderr  # the progress bar


def test_cli_runs_the_train_net(small_data: Path, tmp_path: Path) -> None:
    """The shipped nets also run under ``c2lite run``: one batch, many SGD steps."""
    train = _module("train")
    split = train.load_split(str(small_data / "train.npz"))
    x, label, lengths = next(train.minibatches(split, 8, np.random.default_rng(0)))
    batch = tmp_path / "batch.npz"
    np.savez(batch, X=x, label=label, lengths=lengths)
    out = tmp_path / "out.npz"
    runs = {}
    for iters in (1, 30):
        proc = subprocess.run([sys.executable, "-m", "c2lite", "run",
                               str(EXAMPLE / "train_net.pbtxt"),
                               "--init", str(EXAMPLE / "init_net.pbtxt"), "--inputs", str(batch),
                               "--iters", str(iters), "--profile", "-o", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "PairWiseLossGradient" in proc.stdout
        with np.load(out, allow_pickle=False) as saved:
            runs[iters] = float(saved["loss"])
    assert runs[30] < runs[1]


def test_quickstart_runs() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "20." in proc.stdout and "30." in proc.stdout

"""The ``c2lite`` command line, run as a subprocess (``python -m c2lite ...``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import c2lite
from c2lite import core
from c2lite.draw import GRADIENT_OP_COLOR, OP_COLOR, escape_label, net_to_dot
from c2lite.proto import caffe2_pb2
from c2lite.serialization import read_net

LEGACY = Path(__file__).parent / "data" / "legacy-nets"
LEGACY_FILES = sorted(p for d in ("binary", "text") for p in (LEGACY / d).iterdir()
                      if p.is_file())
SMALL_BINARY = LEGACY / "binary" / "hmc_onnx-export_predict_net.pb"
SQUEEZE = LEGACY / "binary" / "c2-test-assets_squeeze_predict_net.pb"
HAS_DOT = shutil.which("dot") is not None
NEEDS_DOT = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not on PATH, so .svg/.png "
                               "cannot be rendered (install graphviz to run this check)")


def cli(*args: object, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "c2lite", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, rc: int, *needles: str) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("c2lite: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------------
# fixtures: small nets built with c2lite.core
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def toy(tmp_path: Path) -> dict:
    """init: w = 2.0 (2x3); net: s = w + x, c = copy(s), outputs s and c."""
    init = core.Net("toy_init")
    init.ConstantFill([], "w", shape=[2, 3], value=2.0)
    net = core.Net("toy")
    net.Sum(["w", "x"], "s")
    net.Copy(["s"], "c")
    net.AddExternalOutput("s", "c")
    net.Proto().name = "toy"  # core.Net names are process-unique (toy_1...); pin it
    paths = {"init": tmp_path / "init.pbtxt", "text": tmp_path / "toy.pbtxt",
             "binary": tmp_path / "toy.pb", "x": tmp_path / "x.npy"}
    c2lite.save_net(init, paths["init"])
    c2lite.save_net(net, paths["text"])
    c2lite.save_net(net, paths["binary"])
    np.save(paths["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    return paths


@pytest.fixture()
def mlp(tmp_path: Path) -> Path:
    """X -> FC -> Relu -> FC -> AveragedLoss, as a binary net."""
    net = core.Net("mlp")
    hidden = net.FC(["X", "w1", "b1"], "h")
    hidden = net.Relu([hidden], "h_relu")
    out = net.FC([hidden, "w2", "b2"], "y")
    net.AveragedLoss([out], "loss")
    path = tmp_path / "mlp.pb"
    c2lite.save_net(net, path)
    return path


# ---------------------------------------------------------------------------------------------
# general
# ---------------------------------------------------------------------------------------------
def test_help_lists_subcommands() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("run", "inspect", "grad", "convert", "draw", "ops"):
        assert command in proc.stdout


def test_usage_errors_exit_2() -> None:
    assert_one_line_error(cli(), 2, "required")
    assert_one_line_error(cli("frobnicate"), 2, "invalid choice")
    assert_one_line_error(cli("run"), 2, "NET")
    assert_one_line_error(cli("draw", SMALL_BINARY, "--rankdir", "XX", "-o", "x.dot"), 2,
                          "rankdir")


def test_debug_flag_reraises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pb"
    quiet = cli("inspect", missing)
    assert_one_line_error(quiet, 1, "not found", str(missing))
    for args in (("--debug", "inspect", missing), ("inspect", missing, "--debug")):
        loud = cli(*args)
        assert loud.returncode != 0
        assert "Traceback" in loud.stderr


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", LEGACY_FILES, ids=lambda p: p.name)
def test_inspect_every_legacy_file(path: Path) -> None:
    proc = cli("inspect", path)
    assert proc.returncode == 0, proc.stderr
    net = read_net(str(path)).proto
    assert f"ops:        {len(net.op)} in " in proc.stdout
    assert "verdict:" in proc.stdout
    assert proc.stderr == ""


def test_inspect_json_reports_nested_if_nets_upgrades_and_devices() -> None:
    import json
    fp32 = json.loads(cli("inspect", "--json",
                          LEGACY / "binary" / "zoo_mask_rcnn_2go_fp32_model_2018-12.pb").stdout)
    assert fp32["ops"] == 111 and fp32["op_types"]["If"] == 1
    nested = {n["where"].split(".")[-1]: n for n in fp32["nested_nets"]}
    assert set(nested) == {"then_net", "else_net"}
    assert nested["else_net"]["ops"] > 0
    # op types that live only inside the If's nets are analysed too
    assert "ConvTranspose" in fp32["op_type_support"]
    assert "DEPTHWISE_3x3,NNPACK" in fp32["engines"]
    assert fp32["op_type_support"]["Sum"]["cpu"] is True

    ssd = json.loads(cli("inspect", "--json",
                         LEGACY / "text" / "c2-ssd-test_net_2017-05.pbtxt").stdout)
    assert any("cuda_gpu_id" in u for u in ssd["upgrades"])
    assert ssd["op_device_options"] == {"CUDA:3": 100} or "CUDA:3" in ssd["op_device_options"]
    assert "CUDNN" in ssd["engines"]

    lenet = json.loads(cli("inspect", "--json", LEGACY / "text" /
                           "c2-notebook_mnist_lenet_train_2015-06.pbtxt").stdout)
    assert any("operators -> op" in u for u in lenet["upgrades"])


def test_inspect_text_names_missing_kernels_with_nearest_names(tmp_path: Path) -> None:
    net = caffe2_pb2.NetDef(name="typo")
    net.op.add(type="Reluu", input=["x"], output=["y"])
    net.op.add(type="Relu", input=["y"], output=["z"])
    path = tmp_path / "typo.pbtxt"
    c2lite.save_net(net, path)
    proc = cli("inspect", path)
    assert proc.returncode == 0, proc.stderr
    assert "Reluu (unknown operator; nearest: Relu" in proc.stdout
    assert "cannot run 1 of 2 op types" in proc.stdout

    proc = cli("inspect", LEGACY / "text" / "c2-notebook_alexnet2_init_2016-03.pbtxt")
    assert "legacy:     2 legacy spelling(s) upgraded" in proc.stdout
    assert "device_type enum name CUDA -> 1" in proc.stdout
    assert "net CUDA:" in proc.stdout


# ---------------------------------------------------------------------------------------------
# failures: one line, right exit code
# ---------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    for command in ("inspect", "draw", "run"):
        extra = ["-o", tmp_path / "x.dot"] if command == "draw" else []
        assert_one_line_error(cli(command, tmp_path / "missing.pb", *extra), 1, "not found")
    assert_one_line_error(cli("convert", tmp_path / "missing.pbtxt", tmp_path / "o.pb"), 1,
                          "not found")


def test_truncated_binary(tmp_path: Path) -> None:
    data = SQUEEZE.read_bytes()
    cut = tmp_path / "cut.pb"
    cut.write_bytes(data[: len(data) // 2])
    for command in ("inspect", "run", "convert"):
        extra = [tmp_path / "o.pbtxt"] if command == "convert" else []
        assert_one_line_error(cli(command, cut, *extra), 1, "cannot decode", "cut.pb")


def test_unknown_op_in_run(tmp_path: Path) -> None:
    net = caffe2_pb2.NetDef(name="bad")
    net.op.add(type="NoSuchOperator", input=[], output=["y"])
    path = tmp_path / "bad.pbtxt"
    c2lite.save_net(net, path)
    assert_one_line_error(cli("run", path), 1, "NoSuchOperator", "Cannot create operator")


def test_bad_inputs(toy: dict, tmp_path: Path) -> None:
    net = toy["text"]
    # NAME=FILE syntax is a usage error
    assert_one_line_error(cli("run", net, "--input", "x"), 2, "NAME=FILE")
    assert_one_line_error(cli("run", net, "--input", "=x.npy"), 2, "NAME=FILE")
    # unreadable files are runtime errors
    assert_one_line_error(cli("run", net, "--input", f"x={tmp_path / 'none.npy'}"), 1,
                          "not found")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"this is not numpy")
    assert_one_line_error(cli("run", net, "--input", f"x={junk}"), 1, "not a .npy")
    cut = tmp_path / "cut.npy"
    cut.write_bytes(toy["x"].read_bytes()[:100])
    assert_one_line_error(cli("run", net, "--input", f"x={cut}"), 1, "not a readable .npy")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_one_line_error(cli("run", net, "--input", f"x={pickled}"), 1, "pickle")
    pickled_npz = tmp_path / "pickled.npz"
    np.savez(pickled_npz, x=np.array([None], dtype=object))
    assert_one_line_error(cli("run", net, "--inputs", pickled_npz), 1, "pickle")
    # wrong container for the flag
    assert_one_line_error(cli("run", net, "--inputs", toy["x"]), 1, "--input NAME=FILE.npy")
    # an input the net needs that was not fed
    assert_one_line_error(cli("run", net, "--init", toy["init"]), 1, "not provided", "x")
    assert_one_line_error(cli("run", net, "--iters", "0"), 2, "positive")
    assert_one_line_error(cli("run", net, "--device", "tpu"), 2, "cuda")


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
def test_run_summary_output_and_profile(toy: dict, tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    proc = cli("run", toy["text"], "--init", toy["init"], "--input", f"x={toy['x']}",
               "--iters", 5, "--profile", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "ran net 'toy' (2 ops) 5 times" in proc.stdout
    assert "2 outputs (external outputs):" in proc.stdout
    assert "min 2  mean 4.5  max 7" in proc.stdout
    profile = proc.stdout[proc.stdout.index("profile"):]
    assert "Sum" in profile and "Copy" in profile and "share %" in profile
    sum_row = next(line for line in profile.splitlines() if line.startswith("Sum"))
    assert sum_row.split()[1] == "5"  # calls
    with np.load(out, allow_pickle=False) as saved:
        expected = 2.0 + np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(saved["s"], expected)
        np.testing.assert_array_equal(saved["c"], expected)


def test_run_binary_with_npz_and_no_declared_outputs(tmp_path: Path) -> None:
    net = core.Net("plain/net")
    net.ConstantFill([], "scope/w", shape=[3], value=1.0)
    net.Sum(["scope/w", "x"], "scope/y")
    net.AveragedLoss(["scope/y"], "scope/mean")
    path = tmp_path / "plain.pb"
    c2lite.save_net(net, path)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.array([1.0, 2.0, 3.0], dtype=np.float32))
    out = tmp_path / "out.npz"
    proc = cli("run", path, "--inputs", inputs, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "blobs written by the net" in proc.stdout
    with np.load(out, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["scope/mean", "scope/w", "scope/y"]
        np.testing.assert_array_equal(saved["scope/y"], [2.0, 3.0, 4.0])
        assert saved["scope/mean"].shape == () and saved["scope/mean"] == 3.0


def test_run_progress_bar_and_device(toy: dict) -> None:
    proc = cli("run", toy["binary"], "--init", toy["init"], "--input", f"x={toy['x']}",
               "--iters", 40, "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "40/40" in proc.stderr
    quiet = cli("run", toy["binary"], "--init", toy["init"], "--input", f"x={toy['x']}",
                "--iters", 40)
    assert quiet.stderr == ""  # not a TTY: no bar
    cuda = cli("run", toy["binary"], "--init", toy["init"], "--input", f"x={toy['x']}",
               "--device", "cuda:0")
    from c2lite.registry import has_implementation
    if c2lite.workspace.has_gpu_support() and all(has_implementation(t, 1)
                                                  for t in ("Sum", "Copy", "ConstantFill")):
        assert cuda.returncode == 0, cuda.stderr
    else:
        assert_one_line_error(cuda, 1, "CUDA")
    cpu = cli("run", toy["binary"], "--init", toy["init"], "--input", f"x={toy['x']}",
              "--device", "cpu")
    assert cpu.returncode == 0, cpu.stderr


def test_run_runtime_failure_names_the_op(toy: dict, tmp_path: Path) -> None:
    bad_x = tmp_path / "bad_x.npy"
    np.save(bad_x, np.zeros((4,), dtype=np.float32))
    proc = cli("run", toy["text"], "--init", toy["init"], "--input", f"x={bad_x}")
    assert_one_line_error(proc, 1, "Sum")


# ---------------------------------------------------------------------------------------------
# grad
# ---------------------------------------------------------------------------------------------
def test_grad_adds_gradient_ops(mlp: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlp_grad.pbtxt"
    proc = cli("grad", mlp, "--loss", "loss", "-o", out)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("grad: added ")
    assert "w1 -> w1_grad" in line and "(text)" in line
    loaded = read_net(str(out))
    assert loaded.format == "text"
    net = loaded.proto
    assert net.name == "mlp"
    forward, added = net.op[:4], net.op[4:]
    assert [op.type for op in forward] == ["FC", "Relu", "FC", "AveragedLoss"]
    types = [op.type for op in added]
    for expected in ("ConstantFill", "AveragedLossGradient", "FCGradient", "ReluGradient"):
        assert expected in types
    assert all(op.is_gradient_op for op in added if op.type.endswith("Gradient"))
    outputs = {blob for op in added for blob in op.output}
    assert {"w1_grad", "b1_grad", "w2_grad", "b2_grad"} <= outputs
    assert f"added {len(added)} gradient ops" in line

    binary = tmp_path / "mlp_grad.pb"
    skip = cli("grad", mlp, "-l", "loss", "--skip", 2, "-o", binary)
    assert skip.returncode == 0, skip.stderr
    skipped = read_net(str(binary))
    assert skipped.format == "binary"
    assert "w1_grad" not in {b for op in skipped.proto.op for b in op.output}
    assert "w2_grad" in {b for op in skipped.proto.op for b in op.output}


def test_grad_failures(mlp: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("grad", mlp, "--loss", "nope", "-o", tmp_path / "o.pb"), 1,
                          "nope", "not an output")
    assert_one_line_error(cli("grad", mlp, "-o", tmp_path / "o.pb"), 2, "--loss")
    assert_one_line_error(cli("grad", mlp, "--loss", "loss", "--skip", 99,
                              "-o", tmp_path / "o.pb"), 2, "--skip")


# ---------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------
ROUND_TRIP = [p for p in LEGACY_FILES if p.stat().st_size < 1_000_000]


@pytest.mark.parametrize("path", ROUND_TRIP, ids=lambda p: p.name)
def test_convert_round_trip(path: Path, tmp_path: Path) -> None:
    original = read_net(str(path))
    there = tmp_path / ("there.pbtxt" if original.format == "binary" else "there.pb")
    back = tmp_path / ("back.pb" if original.format == "binary" else "back.pbtxt")
    first = cli("convert", path, there)
    assert first.returncode == 0, first.stderr
    second = cli("convert", there, back)
    assert second.returncode == 0, second.stderr
    assert read_net(str(there)).format != original.format
    assert read_net(str(there)).proto == original.proto
    assert read_net(str(back)).proto == original.proto
    if original.format == "binary":
        assert back.read_bytes() == path.read_bytes()
    if original.upgrades:
        assert "upgraded: " in first.stdout
        assert f"upgraded {len(original.upgrades)} legacy spelling" in first.stdout
        # the written text uses today's spellings, so it loads with no upgrades
        assert read_net(str(back)).upgrades == []
    else:
        assert "no legacy spellings" in first.stdout


def test_convert_format_flag(tmp_path: Path) -> None:
    out = tmp_path / "net.bin"
    proc = cli("convert", LEGACY / "text" / "zoo_vgg19_predict_net.pbtxt", out,
               "--format", "text")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().lstrip().startswith("name:")


# ---------------------------------------------------------------------------------------------
# draw
# ---------------------------------------------------------------------------------------------
def test_draw_dot(tmp_path: Path) -> None:
    out = tmp_path / "net.dot"
    proc = cli("draw", SMALL_BINARY, "-o", out, "--rankdir", "TB")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    net = read_net(str(SMALL_BINARY)).proto
    assert text.startswith('digraph "torch-jit-export" {')
    assert 'rankdir="TB"' in text
    assert text.count(f'fillcolor="{OP_COLOR}"') == len(net.op)
    assert 'fontcolor="#FFFFFF"' in text
    assert f'label="{net.op[0].type} (op#0)"' in text
    assert 'shape="octagon"' in text

    minimal = tmp_path / "min.dot"
    assert cli("draw", SMALL_BINARY, "-o", minimal, "--minimal").returncode == 0
    assert "octagon" not in minimal.read_text()
    assert "op0 -> op1;" in minimal.read_text()


def test_draw_versions_escaping_and_gradient_colour() -> None:
    net = caffe2_pb2.NetDef(name='we"ird\\net')
    net.op.add(type="Relu", input=["a"], output=["a"], name="inplace")
    net.op.add(type="Copy", input=["a"], output=['b"q\\uote'])
    net.op.add(type="Copy", input=['b"q\\uote'], output=["a"])
    net.op.add(type="ReluGradient", input=["a", "a"], output=["a_grad"], is_gradient_op=True)
    text = net_to_dot(net)
    # "a" is read (version 0), rewritten in place by op 0 and overwritten by op 2: three
    # separate nodes labelled "a"
    assert text.count('label="a"') == 3
    assert 'label="inplace/Relu (op#0)"' in text
    assert r'label="b\"q\\uote"' in text
    assert r'digraph "we\"ird\\net"' in text
    assert f'fillcolor="{GRADIENT_OP_COLOR}"' in text
    assert escape_label("x\ny") == r"x\ny"
    # legacy nets without is_gradient_op are recognised by their type names
    legacy = read_net(str(LEGACY / "text" / "c2-notebook_mnist_lenet_train_2016-03.pbtxt"))
    assert GRADIENT_OP_COLOR in net_to_dot(legacy.proto)


@NEEDS_DOT
def test_draw_svg_and_png(tmp_path: Path) -> None:
    svg = tmp_path / "net.svg"
    proc = cli("draw", LEGACY / "text" / "c2-notebook_mnist_lenet_train_2016-03.pbtxt", "-o", svg)
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "ConvGradient" in svg.read_text()
    png = tmp_path / "net.png"
    proc = cli("draw", SMALL_BINARY, "-o", png, "--minimal")
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_without_graphviz_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    proc = cli("draw", SMALL_BINARY, "-o", tmp_path / "x.svg", env=env)
    assert_one_line_error(proc, 1, "Graphviz", ".dot")
    proc = cli("draw", SMALL_BINARY, "-o", tmp_path / "x.dot", env=env)
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(cli("draw", SMALL_BINARY, "-o", tmp_path / "x.jpg"), 1, ".svg")


# ---------------------------------------------------------------------------------------------
# ops
# ---------------------------------------------------------------------------------------------
def test_ops_list_and_describe() -> None:
    proc = cli("ops")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert "CPU" in rows["Sum"].split()[1]
    assert "ConstantFill" in rows
    one = cli("ops", "Sum")
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("Sum: inputs [1, inf], outputs [1, 1]")
    assert "devices: CPU" in one.stdout
    assert "gradient:" in one.stdout


def test_ops_unknown_name_suggests() -> None:
    assert_one_line_error(cli("ops", "ConstantFil"), 1, "unknown operator", "ConstantFill")
    assert_one_line_error(cli("ops", "sum"), 1, "did you mean: Sum")


def test_console_entry_point_main_in_process(capsys: pytest.CaptureFixture) -> None:
    from c2lite.cli import main
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert main(["ops", "Sum"]) == 0
    assert "Sum:" in capsys.readouterr().out
    assert main(["inspect", "/definitely/not/here.pb"]) == 1
    assert "c2lite: error:" in capsys.readouterr().err


def test_progress_bar_without_tqdm(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    from c2lite.cli import progress_bar
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    bar = progress_bar(5, "demo", enabled=True)
    for _ in range(5):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "demo: [" in err and "5/5" in err
    assert type(progress_bar(5, "off", enabled=False)).__name__ == "_NoBar"

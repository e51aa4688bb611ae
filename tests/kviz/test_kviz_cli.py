"""The command line, run as a real subprocess: `python -m kviz summary|plot MODULE:FACTORY`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "kviz", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_summary_command() -> None:
    proc = run("summary", "_models_kviz:make_cnn", "--input-size", "1,3,32,32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == 'Model: "SmallCNN"'
    assert any(line.startswith("conv1 (Conv2d)") and "[1, 8, 32, 32]" in line for line in lines)
    assert "Total params: 11,658 (45.54 KB)" in lines


def test_summary_command_options_and_two_inputs() -> None:
    proc = run(
        "summary",
        "_models_kviz:TwoInputLSTM",
        "--input-size",
        "2,6",
        "--input-size",
        "2,5",
        "--dtypes",
        "int64,float32",
        "--line-length",
        "120",
        "--show-trainable",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Connected to" in lines[2] and "Trainable" in lines[2]
    assert max(len(line) for line in lines) <= 120
    assert any(line.startswith("cat (torch.cat)") for line in lines)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_plot_command(tmp_path: Path) -> None:
    out = tmp_path / "model.png"
    proc = run(
        "plot",
        "_models_kviz:ResidualBlock",
        "-o",
        str(out),
        "--input-size",
        "1,8,4,4",
        "--show-shapes",
        "--rankdir",
        "LR",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_command_dot_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\nnet = nn.Sequential(nn.Linear(3, 4), nn.Tanh())\n"
    )
    proc = run("plot", "mymodels:net", "-o", "net.dot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "net.dot").read_text()
    assert "0: Linear" in text and "1: Tanh" in text


@pytest.mark.parametrize("spelling", ["scalar", "()"])
def test_a_0d_input_and_a_0d_input_beside_another(tmp_path: Path, spelling: str) -> None:
    (tmp_path / "scalars.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Scale(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(1, 2)\n"
        "    def forward(self, t, x=None):\n"
        "        out = self.fc(t.reshape(1, 1))\n"
        "        return out if x is None else out * x\n"
    )
    proc = run("summary", "scalars:Scale", "--input-size", spelling, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert any(
        line.startswith("fc (Linear)") and "[1, 2]" in line for line in proc.stdout.splitlines()
    )
    proc = run(
        "plot", "scalars:Scale", "-o", "m.dot", "--show-shapes",
        "--input-size", spelling, "--input-size", "1,2", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Linear" in (tmp_path / "m.dot").read_text()


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = run("summary", "_models_kviz:missing", cwd=tmp_path)
    assert proc.returncode == 2
    assert "has no attribute 'missing'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("summary", "nocolon"), "MODULE:FACTORY"),
        (("summary", "no_such_module_kviz:x"), "cannot import module"),
        (("summary", "_models_kviz:annotations"), "neither an nn.Module nor callable"),
        (("summary", "_models_kviz:deep_chain.__name__"), "neither an nn.Module nor callable"),
        (("summary", "_models_kviz:chain3", "--input-size", "1,a"), "not a shape"),
        (("summary", "_models_kviz:chain3", "--dtypes", "float99"), "not a torch dtype"),
        (("plot", "_models_kviz:chain3", "-o", "m.bmpx"), "unknown format"),
        (("summary", "_models_kviz:chain3", "--positions", "1,2"), "positions must give 3"),
    ],
)
def test_usage_errors_in_process(
    args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same entry point as `python -m kviz`, without paying a process start per case.
    from kviz._cli import main

    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse's own exit
        status = int(exc.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err


def test_factory_returning_something_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kviz._cli import main

    (tmp_path / "notamodel_kviz.py").write_text("def make():\n    return 42\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SystemExit) as info:
            main(["summary", "notamodel_kviz:make"])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("notamodel_kviz", None)
    assert info.value.code == 2
    assert "returned int, not a torch.nn.Module" in capsys.readouterr().err


def test_forward_failure_exits_1() -> None:
    proc = run("summary", "_models_kviz:make_cnn", "--input-size", "1,5")
    assert proc.returncode == 1
    assert "kviz: error: the forward pass of SmallCNN failed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("spec", "status", "message"),
    [
        ("broken_kviz:net", 1, "importing 'broken_kviz' raised RuntimeError: no GPU here"),
        ("needsdep_kviz:net", 1, "raised ModuleNotFoundError: No module named 'absent_dep_kviz'"),
        ("factories_kviz:needs_arg", 2, "cannot be called with no arguments"),
        ("factories_kviz:fails", 1, "calling 'factories_kviz:fails' raised ValueError: bad size"),
        ("factories_kviz:fails.x", 2, "'factories_kviz.fails' has no attribute 'x'"),
        ("factories_kviz:net:extra", 2, "MODULE:FACTORY"),
        ("factories_kviz:", 2, "MODULE:FACTORY"),
    ],
)
def test_bad_model_specs(
    spec: str,
    status: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kviz._cli import main

    (tmp_path / "broken_kviz.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "needsdep_kviz.py").write_text("import absent_dep_kviz\n")
    (tmp_path / "factories_kviz.py").write_text(
        "from torch import nn\n"
        "def needs_arg(width):\n    return nn.Linear(width, 2)\n"
        "def fails():\n    raise ValueError('bad size')\n"
        "net = nn.Linear(2, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("broken_kviz", "needsdep_kviz", "factories_kviz"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        code = main(["summary", spec])
    except SystemExit as exc:  # argparse's usage error
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == status, err
    assert message in err and "Traceback" not in err


def test_new_options_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kviz._cli import main

    status = main(
        ["summary", "_models_kviz:make_cnn", "--input-size", "1,3,32,32",
         "--layer-range", "conv2", "fc", "--extra-columns", "param_bytes"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0 and "Param size" in out
    assert "conv1 (Conv2d)" not in out and "conv2 (Conv2d)" in out and "fc (Linear)" in out
    path = tmp_path / "m.dot"
    status = main(
        ["plot", "_models_kviz:make_cnn", "--input-size", "1,3,32,32", "-o", str(path),
         "--dpi", "72.5", "--show-dtype", "--show-functional", "--show-trainable",
         "--show-layer-activations"]
    )  # fmt: skip
    text = path.read_text()
    assert status == 0 and "dpi=72.5" in text and "flatten: torch.flatten" in text
    assert "trainable: Y" in text and "float32" in text


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("--layer-range", "nope", "fc"), 2, "layer_range"),
        (("--extra-columns", "flops"), 2, "extra_columns"),
        (("--depth", "0"), 2, "depth must be"),
        (("--input-size", "1,5"), 1, "the forward pass of SmallCNN failed"),
    ],
)
def test_exit_status_usage_2_other_1(
    args: tuple[str, ...], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from kviz._cli import main

    argv = ["summary", "_models_kviz:make_cnn", "--input-size", "1,3,32,32", *args]
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("kviz: error:") and message in err and err.count("\n") == 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_a_failing_dot_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kviz._cli import main

    # A real `dot` that fails: a script named dot, first on PATH.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'Error: out of memory' >&2\nexit 3\n")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    status = main(["plot", "_models_kviz:chain3", "-o", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert status == 1 and "out of memory" in err and err.count("\n") == 1
    assert not (tmp_path / "m.png").exists()

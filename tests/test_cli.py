"""The command line: `fastmlp demo`, `fastmlp info`, `fastmlp --version`, `python -m fastmlp`
(`fastmlp train` / `predict`: test_cli_files.py)."""

import os
import re
import shutil
import subprocess
import sys

import pytest

import fastmlp as fm
from fastmlp import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCH_LINE = re.compile(r"^Epoch (\d+), Loss: (\d+\.\d{6})$")


def run_cli(capsys, *argv):
    code = cli.main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_demo_trains_prints_and_writes_the_picture(tmp_path, capsys):
    out = tmp_path / "d.png"
    code, lines, err = run_cli(capsys, "demo", "--epochs", "200", "--out", out)
    assert code == 0, err
    assert err == ""
    assert len(lines) == 12, lines
    epochs = [EPOCH_LINE.match(line) for line in lines[:10]]
    assert all(epochs), lines[:10]
    assert [int(m.group(1)) for m in epochs] == list(range(0, 200, 20))
    # The article's seeded stream: its first printed loss, whatever the epoch count.
    assert epochs[0].group(2) == "0.273740"
    final = re.fullmatch(r"Final training loss: (\d+\.\d{6})", lines[10])
    assert final and float(final.group(1)) < float(epochs[0].group(2))
    assert re.fullmatch(r"Training time: [\d.]+ (ms|s) \(200 epochs, \d+ threads?\)", lines[11]), lines[11]

    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (500, 1200)  # figsize (12, 5) at 100 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]  # no temporary left behind


def test_demo_no_plot_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, lines, err = run_cli(capsys, "demo", "--epochs", "10", "--no-plot")
    assert code == 0, err
    assert [line.split(",")[0] for line in lines[:10]] == [f"Epoch {i}" for i in range(10)]
    assert lines[10].startswith("Final training loss: ")
    assert len(lines) == 12
    assert list(tmp_path.iterdir()) == []


def test_demo_without_matplotlib_trains_and_says_how_to_get_the_picture(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "d.png"
    code, lines, err = run_cli(capsys, "demo", "--epochs", "20", "--out", out)
    assert code == 0
    assert err == ""
    assert len(lines) == 13
    assert lines[10].startswith("Final training loss: ")
    assert 'pip install "fastmlp[plot]"' in lines[-1]
    assert "skipped" in lines[-1]
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing_folder", "a_directory"])
def test_demo_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys, where):
    out = tmp_path / "no" / "such" / "d.png" if where == "missing_folder" else tmp_path
    code, lines, err = run_cli(capsys, "demo", "--epochs", "10", "--out", out)
    assert code == 2  # every user error, as argparse's usage errors
    assert lines == []  # fails before training
    assert err.count("\n") == 1 and err.startswith("fastmlp demo: error: cannot write"), err
    assert "Traceback" not in err


def test_demo_failed_write_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d.png"
    out.write_bytes(b"old picture")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli.os, "replace", failing_replace)
    code, lines, err = run_cli(capsys, "demo", "--epochs", "10", "--out", out)
    assert code == 2
    assert err.startswith("fastmlp demo: error:") and "No space left" in err and err.count("\n") == 1
    assert out.read_bytes() == b"old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["demo", "--epochs", "0"], ["demo", "--epochs", "many"], ["demo", "--bogus"],
     ["demo", "--out", "x.png", "--no-plot"], ["demo", "--seed", "-1"], ["demo", "--epochs", str(2**63)],
     ["demo", "--seed", str(2**64)]],
)
def test_bad_options_are_usage_errors(capsys, argv):
    code, lines, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("usage: fastmlp")
    assert "error:" in err


def test_version(capsys):
    code, lines, err = run_cli(capsys, "--version")
    assert code == 0
    assert lines == [f"fastmlp {fm.__version__}"]


def test_info_lists_the_build(capsys):
    code, lines, err = run_cli(capsys, "info")
    assert code == 0, err
    rows = dict(line.split(":", 1) for line in lines)
    for key in ("fastmlp", "python", "numpy", "compiler", "build type", "build flags",
                "threads", "architecture", "cpu features", "gemm kernel"):
        assert key in rows, key
    assert rows["fastmlp"].strip() == fm.__version__
    assert int(rows["threads"].split()[0]) == fm.get_num_threads()
    # Aligned: every value starts in the same column.
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}) == 1


def test_python_dash_m_fastmlp_info():
    result = subprocess.run([sys.executable, "-m", "fastmlp", "info"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fastmlp:")
    assert "gemm kernel:" in result.stdout


def test_console_script_version():
    script = shutil.which("fastmlp", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the fastmlp console script is not installed beside this Python")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"fastmlp {fm.__version__}\n"

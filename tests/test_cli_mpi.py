"""`mpiexec -n 2 fastmlp train DATA ...`: data-parallel training from the command line.
Each case runs `python -m fastmlp` under the mpich wheel's mpiexec in a subprocess with a
timeout (an error must end every rank, not hang one); skipped when mpi4py or mpiexec is
not installed. The launch detection and the silence of ranks other than 0 are checked
in this process, without MPI."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import cli

TIMEOUT = 60  # seconds: every case takes about one; a hang would take this long


def mpiexec() -> str:
    pytest.importorskip("mpi4py")
    beside = Path(sys.executable).with_name("mpiexec")  # the mpich wheel puts it in the venv's bin/
    launcher = str(beside) if beside.exists() else shutil.which("mpiexec")
    if launcher is None:
        pytest.skip("no mpiexec (pip install 'fastmlp[mpi]' brings mpich's)")
    return launcher


def fastmlp_command(*argv) -> list[str]:
    return [sys.executable, "-m", "fastmlp", *(os.fspath(a) for a in argv)]


def run_ranks(*programs: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """mpiexec with one rank per program (MPMD: `-n 1 A : -n 1 B`), each rank one thread."""
    command = [mpiexec()]
    for i, program in enumerate(programs):
        command += ([":"] if i else []) + ["-n", "1", *program]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=env)


def run_two(*argv, cwd: Path) -> subprocess.CompletedProcess:
    return run_ranks(fastmlp_command(*argv), fastmlp_command(*argv), cwd=cwd)


def write_data(path: Path, n: int = 203, seed: int = 0) -> Path:
    """Three features; "species" (a, b, c) a function of them, "price" a smooth one."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    species = np.where(X[:, 0] + X[:, 1] > 0.5, "a", np.where(X[:, 2] > 0, "b", "c"))
    price = 100 + 3 * X[:, 0] + X[:, 1] ** 2 - 2 * X[:, 2]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["x0", "x1", "x2", "species", "price"])
        writer.writerows([*map(repr, map(float, x)), s, repr(float(p))] for x, s, p in zip(X, species, price))
    return path


@pytest.fixture
def data_csv(tmp_path):
    return write_data(tmp_path / "data.csv")


# ---- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target, options", [
    ("species", ["--validation", "0.25", "--patience", "3", "--batch-size", "50", "--epochs", "12"]),
    ("price", ["--features", "x0,x1,x2", "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "32", "--epochs", "8"]),
])
def test_two_ranks_train_as_one_process(data_csv, tmp_path, capsys, target, options):
    """Two ranks make the model one process makes with the same seed (rank 0's, drawn
    and printed when not given), to rounding; only rank 0 prints and writes it."""
    argv = ["train", data_csv, "--target", target, "--dtype", "float64", *options]
    result = run_two(*argv, "--out", tmp_path / "two.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["Data:", "Network:", "Processes:", "Trained", "Model:"]
    assert lines[2].startswith("Processes: 2 (MPI, data-parallel") and lines[2].endswith("1 thread each.")
    seed = re.search(r"seed (\d+)\.", lines[1]).group(1)
    assert not (tmp_path / "model.npz").exists()

    assert cli.main([*map(os.fspath, argv), "--seed", seed, "--out", os.fspath(tmp_path / "one.npz")]) == 0
    alone = capsys.readouterr().out.splitlines()

    def untimed(line: str) -> str:
        return re.sub(r" in [\d.]+ m?s:", ":", line)

    assert alone[:2] == lines[:2] and untimed(alone[2]) == untimed(lines[3])
    two, one = fm.load(tmp_path / "two.npz"), fm.load(tmp_path / "one.npz")
    assert two.metadata == one.metadata
    np.testing.assert_allclose(two.params, one.params, rtol=1e-10, atol=1e-13)


# ---- errors: one line from rank 0, exit 2 on every rank, no hang ------------------------------


def assert_one_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert re.fullmatch(f"fastmlp train: error: {pattern}\n", result.stderr), result.stderr


def test_a_missing_file_on_every_rank(tmp_path):
    result = run_two("train", tmp_path / "absent.csv", "--target", "species", cwd=tmp_path)
    assert_one_error(result, r"\S*absent.csv: no such file")


def test_batch_norm_is_refused(data_csv, tmp_path):
    result = run_two("train", data_csv, "--target", "species", "--norm", "batch", "--dropout", "0.1", cwd=tmp_path)
    assert_one_error(result, r"--norm batch: not supported across MPI processes yet .*")


def test_an_unwritable_out_is_rank_zeros(data_csv, tmp_path):
    result = run_two("train", data_csv, "--target", "species", "--out", tmp_path / "nowhere" / "m.npz", cwd=tmp_path)
    assert_one_error(result, r"rank 0 \([^)]*\): cannot write \S*m.npz: no such directory .*")


def test_a_file_missing_on_one_rank_only(data_csv, tmp_path):
    options = ["--target", "species", "--epochs", "2"]
    result = run_ranks(fastmlp_command("train", data_csv, *options),
                       fastmlp_command("train", tmp_path / "absent.csv", *options), cwd=tmp_path)
    assert_one_error(result, r"rank 1 \([^)]*\): \S*absent.csv: no such file")


def test_ranks_that_read_different_rows(data_csv, tmp_path):
    other = write_data(tmp_path / "other.csv", n=120, seed=1)
    options = ["--target", "species", "--epochs", "2"]
    result = run_ranks(fastmlp_command("train", data_csv, *options),
                       fastmlp_command("train", other, *options), cwd=tmp_path)
    assert_one_error(result, r"\S*data.csv: the processes read different data \(rank 0 \(.*\): \S*data.csv, "
                             r"203 rows of 4 features \(x0, x1, x2, price\), sha256 \w+; rank 1 \(.*\): \S*other.csv, "
                             r"120 rows .*\); every process must read the same rows: .*")
    assert not (tmp_path / "model.npz").exists()


def test_a_bug_on_one_rank_ends_every_rank(data_csv, tmp_path):
    """An unexpected exception on rank 1 (not a user error): its traceback, and MPI_Abort
    ends rank 0 too, which would otherwise wait for rank 1 in the next collective."""
    script = tmp_path / "bug.py"
    script.write_text("import os, sys\n"
                      "from fastmlp import cli\n"
                      "setup = cli._training_setup\n"
                      "def failing(*args):\n"
                      "    if os.environ['PMI_RANK'] == '1':\n"
                      "        raise RuntimeError('a bug on rank 1')\n"
                      "    return setup(*args)\n"
                      "cli._training_setup = failing\n"
                      "sys.exit(cli.main(sys.argv[1:]))\n")
    program = [sys.executable, os.fspath(script), "train", os.fspath(data_csv), "--target", "species"]
    result = run_ranks(program, program, cwd=tmp_path)
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "RuntimeError: a bug on rank 1" in result.stderr and result.stdout == ""


# ---- in this process, without MPI ---------------------------------------------------------------


@pytest.fixture
def launcher_env(monkeypatch):
    """No launcher variables, and no mpi4py.MPI (another test may have imported it)."""
    for size_name, rank_name in cli.LAUNCH_VARIABLES:
        monkeypatch.delenv(size_name, raising=False)
        monkeypatch.delenv(rank_name, raising=False)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    return monkeypatch


@pytest.mark.parametrize("variables, expected", [
    ({}, (0, 1)),
    ({"PMI_SIZE": "1", "PMI_RANK": "0"}, (0, 1)),  # mpiexec -n 1: a plain run, mpi4py not imported
    ({"PMI_SIZE": "3", "PMI_RANK": "2"}, (2, 3)),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"}, (1, 4)),
    ({"PMI_SIZE": "two", "PMI_RANK": "0"}, (0, 1)),
])
def test_the_launch_is_read_from_the_launchers_variables(launcher_env, variables, expected):
    for name, value in variables.items():
        launcher_env.setenv(name, value)
    assert cli._launch() == expected


def test_ranks_other_than_zero_print_nothing_of_train(launcher_env, capsys):
    launcher_env.setenv("PMI_SIZE", "2")
    launcher_env.setenv("PMI_RANK", "1")
    assert cli.main(["train", "data.csv", "--no-such-option"]) == 2
    assert capsys.readouterr() == ("", "")


def test_other_commands_ignore_the_launch(launcher_env, capsys):
    """A plain command run from inside an MPI job (its rank's variables inherited) prints
    as anywhere else."""
    launcher_env.setenv("PMI_SIZE", "2")
    launcher_env.setenv("PMI_RANK", "1")
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("fastmlp ")


def test_srun_with_pmix_is_told_how_to_launch(launcher_env, data_csv, capsys):
    launcher_env.setenv("PMIX_RANK", "0")
    launcher_env.setenv("SLURM_NTASKS", "4")
    assert cli.main(["train", os.fspath(data_csv), "--target", "species"]) == 2
    assert "python -m mpi4py -m fastmlp train" in capsys.readouterr().err


def test_without_mpi4py_the_launch_is_an_error(launcher_env, data_csv, capsys):
    launcher_env.setenv("PMI_SIZE", "2")
    launcher_env.setenv("PMI_RANK", "0")
    launcher_env.setitem(sys.modules, "mpi4py", None)  # import mpi4py fails
    assert cli.main(["train", os.fspath(data_csv), "--target", "species"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ('fastmlp train: error: started as 2 processes by an MPI launcher, but mpi4py is '
                                 'not installed: pip install "fastmlp[mpi]", or run without mpiexec\n')

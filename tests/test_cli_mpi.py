"""`mpiexec -n N fastmlp train DATA ...`: data-parallel training from the command line,
each rank reading only its block of the file's rows. Each case runs `python -m fastmlp`
under the mpich wheel's mpiexec in a subprocess with a timeout (an error must end every
rank, not hang one); skipped when mpi4py or mpiexec is not installed. The launch
detection and the silence of ranks other than 0 are checked in this process, without MPI.

That each rank reads only its rows is shown by files whose other rows are bad: a cell
that is not a number in rank 1's block is named by rank 1 alone (were it read by rank 0
too, every rank would fail alike and the message would name none)."""

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


def run_alone(capsys, *argv) -> list[str]:
    """`fastmlp ARGV` in this process; its stdout's lines."""
    assert cli.main([os.fspath(a) for a in argv]) == 0
    return capsys.readouterr().out.splitlines()


def figure(line: str, what: str, where: str) -> float:
    """The accuracy or RMSE that a "Trained ..." line reports on the training or validation rows."""
    return float(re.search(rf"{what} ([\d.e+-]+) \({where}\)", line).group(1))


@pytest.mark.parametrize("ranks", [2, 3])
def test_each_rank_reads_its_rows_and_the_model_predicts_as_one_processs(data_csv, tmp_path, capsys, ranks):
    """The ranks together standardize as one process reading the whole file does (to
    rtol 1e-12), agree on the class labels, and train a model that classifies as well;
    the summary's accuracy is that of the whole file; only rank 0 prints and writes."""
    argv = ["train", data_csv, "--target", "species", "--dtype", "float64", "--epochs", "15", "--batch-size", "32",
            "--seed", "3"]
    result = run_ranks(*[fastmlp_command(*argv, "--out", tmp_path / "ranks.npz")] * ranks, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["Data:", "Network:", "Processes:", "Trained", "Model:"]
    blocks = ", ".join(str(203 * (r + 1) // ranks - 203 * r // ranks) for r in range(ranks))
    assert lines[2] == (f"Processes: {ranks} (MPI, data-parallel: each read its own block of rows ({blocks}) and "
                        "computes the gradient of its share of every batch of 32 rows, summed across them), "
                        "1 thread each.")
    assert not (tmp_path / "model.npz").exists()

    alone = run_alone(capsys, *argv, "--out", tmp_path / "one.npz")
    assert alone[:2] == lines[:2]
    many, one = fm.load(tmp_path / "ranks.npz").metadata["cli"], fm.load(tmp_path / "one.npz").metadata["cli"]
    for key in ("x_mean", "x_scale"):
        np.testing.assert_allclose(many.pop(key), one.pop(key), rtol=1e-12, err_msg=key)
    assert many == one  # task, features, target, classes
    accuracy = figure(lines[3], "accuracy", "training")
    assert accuracy >= 0.93 and abs(accuracy - figure(alone[2], "accuracy", "training")) <= 0.04

    predicted = run_alone(capsys, "predict", tmp_path / "ranks.npz", data_csv)[1:]
    with open(data_csv, newline="", encoding="utf-8") as f:
        species = [row["species"] for row in csv.DictReader(f)]
    assert np.mean(np.array(predicted) == np.array(species)) == pytest.approx(accuracy, abs=5e-5)


def test_an_npy_regression_with_validation_across_ranks(tmp_path, capsys):
    """.npy, memory-mapped: the target's and the features' standardization equal the
    whole file's; each rank holds out its own fraction of its rows for validation;
    the fit is as good as one process's."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]
    y = 100 + 3 * X[:, 0] + 0.1 * X[:, 1] - 20 * X[:, 2] + rng.normal(scale=0.1, size=240)
    np.save(tmp_path / "data.npy", np.column_stack([X, y]))
    argv = ["train", tmp_path / "data.npy", "--dtype", "float64", "--epochs", "30", "--batch-size", "16",
            "--layers", "16", "--seed", "5"]
    result = run_two(*argv, "--no-standardize", "--validation", "0.25", "--out", tmp_path / "raw.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (f"Data: {tmp_path / 'data.npy'}, 240 rows (180 for training, "
                                             "60 for validation), 3 features; target column 3: regression.")
    result = run_two(*argv, "--validation", "0.25", "--out", tmp_path / "two.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    two = fm.load(tmp_path / "two.npz").metadata["cli"]
    # Each rank's 120 rows: 30 held out by its own generator; the rest standardize together.
    train_rows = np.concatenate([120 * r + np.sort(np.random.default_rng([5, r]).permutation(120)[30:])
                                 for r in range(2)])
    np.testing.assert_allclose(two["x_mean"], X[train_rows].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(two["x_scale"], X[train_rows].std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(two["y_mean"], [y[train_rows].mean()], rtol=1e-12)
    np.testing.assert_allclose(two["y_scale"], [y[train_rows].std()], rtol=1e-12)

    alone = run_alone(capsys, *argv, "--validation", "0.25", "--out", tmp_path / "one.npz")
    ours, theirs = result.stdout.splitlines()[3], alone[2]
    for where in ("training", "validation"):
        assert figure(ours, "RMSE", where) <= max(1.5 * figure(theirs, "RMSE", where), 1.0), (ours, theirs)


def test_a_target_that_is_text_on_one_rank_only(tmp_path, capsys):
    """The first rows' target cells are numbers, the last ones' text: the file's target
    is text, as one process reading it whole finds (the same error; the same labels
    with --task classification)."""
    rng = np.random.default_rng(2)
    with open(tmp_path / "mixed.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["x0", "x1", "grade"])
        for i in range(60):
            writer.writerow([*map(repr, rng.normal(size=2).tolist()), str(1 + i % 3) if i < 40 else "x"])
    argv = ["train", tmp_path / "mixed.csv", "--target", "grade", "--epochs", "2"]
    result = run_two(*argv, cwd=tmp_path)
    assert cli.main([os.fspath(a) for a in argv]) == 2
    assert result.returncode == 2 and result.stderr == capsys.readouterr().err
    assert '"x" is not a number (the other values are numbers' in result.stderr

    result = run_two(*argv, "--task", "classification", "--out", tmp_path / "two.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"seed \d+\.$", result.stdout.splitlines()[1])  # rank 0's, drawn and printed
    assert fm.load(tmp_path / "two.npz").metadata["cli"]["classes"] == ["1", "2", "3", "x"]


@pytest.mark.parametrize("labels, task", [
    (np.arange(61) % 3, []),  # few whole numbers on every rank: classes 0, 1, 2
    (np.where(np.arange(61) < 40, np.arange(61) % 8, 8 + np.arange(61) % 15), []),  # 8 and 15, 23 together: regression
    (np.array(["dog", "cat", "emu", "yak"])[np.arange(61) % 4], []),
    (np.arange(61) % 5 + 0.5, ["--task", "classification"]),
])
def test_the_task_and_labels_of_the_whole_file(tmp_path, capsys, labels, task):
    """The task and the class labels chosen across three ranks, each seeing a third of
    the targets, are those one process chooses from all of them."""
    X = np.random.default_rng(6).normal(size=(61, 2))
    np.savez(tmp_path / "data.npz", X=X, y=labels)
    argv = ["train", tmp_path / "data.npz", *task, "--epochs", "1", "--seed", "2"]
    result = run_ranks(*[fastmlp_command(*argv, "--out", tmp_path / "three.npz")] * 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_alone(capsys, *argv, "--out", tmp_path / "one.npz")
    three, one = fm.load(tmp_path / "three.npz").metadata["cli"], fm.load(tmp_path / "one.npz").metadata["cli"]
    assert (three["task"], three["classes"]) == (one["task"], one["classes"])


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


def test_ranks_that_read_different_files(data_csv, tmp_path):
    other = write_data(tmp_path / "other.csv", n=120, seed=1)
    options = ["--target", "species", "--epochs", "2"]
    result = run_ranks(fastmlp_command("train", data_csv, *options),
                       fastmlp_command("train", other, *options), cwd=tmp_path)
    assert_one_error(result, r"\S*data.csv: the processes read different files \(rank 0 \(.*\): \S*data.csv, "
                             r"203 rows, columns x0, x1, x2, species, price, \d+ bytes; rank 1 \(.*\): "
                             r"\S*other.csv, 120 rows, .*\); every process reads its own rows of the same file: .*")
    assert not (tmp_path / "model.npz").exists()


@pytest.mark.parametrize("kind", ["csv", "npy", "npz"])
def test_a_bad_value_in_rank_1s_rows_is_rank_1s_alone(tmp_path, kind):
    """Rank 0 never reads rank 1's rows: a bad value there fails rank 1 only."""
    X, y = np.random.default_rng(3).normal(size=(40, 2)), np.arange(40) % 2
    if kind == "csv":
        path = tmp_path / "data.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["x0", "x1", "label"])
            writer.writerows([repr(float(a)), "abc" if i == 30 else repr(float(b)), int(c)]
                            for i, ((a, b), c) in enumerate(zip(X, y)))
        where, target = r'\S*data.csv:32: column "x1": "abc" is not a number', ["--target", "label"]
    else:
        X[30, 1] = np.nan
        path = tmp_path / f"data.{kind}"
        if kind == "npy":
            np.save(path, np.column_stack([X, y]))
        else:
            np.savez_compressed(path, X=X, y=y)
        where, target = rf"\S*data.{kind}: {'X ' if kind == 'npz' else ''}row 30, column 1 \(from 0\): nan is not a " \
                        "finite number", []
    result = run_two("train", path, *target, "--epochs", "2", cwd=tmp_path)
    assert_one_error(result, rf"rank 1 \([^)]*\): {where}")


def test_fewer_rows_than_ranks(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("x,label\n1,a\n2,b\n")
    result = run_ranks(*[fastmlp_command("train", path, "--target", "label")] * 3, cwd=tmp_path)
    assert_one_error(result, r"\S*two.csv: 2 data rows for 3 processes; every process needs one row or more")


def test_a_bug_on_one_rank_ends_every_rank(data_csv, tmp_path):
    """An unexpected exception on rank 1 (not a user error): its traceback, and MPI_Abort
    ends rank 0 too, which would otherwise wait for rank 1 in the next collective."""
    script = tmp_path / "bug.py"
    script.write_text("import os, sys\n"
                      "from fastmlp import cli\n"
                      "setup = cli._shard_setup\n"
                      "def failing(*args):\n"
                      "    if os.environ['PMI_RANK'] == '1':\n"
                      "        raise RuntimeError('a bug on rank 1')\n"
                      "    return setup(*args)\n"
                      "cli._shard_setup = failing\n"
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

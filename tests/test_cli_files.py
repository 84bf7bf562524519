"""`fastmlp train` and `fastmlp predict` on files the tests write: CSV, .npy and .npz;
every bad file gets one line on stderr naming the file, line and column, and exit 2."""

import csv
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _datafiles as datafiles
from fastmlp import cli


def run_cli(capsys, *argv):
    code = cli.main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path_or_text):
    text = path_or_text.read_text() if hasattr(path_or_text, "read_text") else path_or_text
    rows = list(csv.reader(text.splitlines()))
    return rows[0], rows[1:]


def dataset(n=240, seed=0):
    """Three features; "species" (a, b, c) a function of them, "price" a smooth one."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    species = np.where(X[:, 0] + X[:, 1] > 0.5, "a", np.where(X[:, 2] > 0, "b", "c"))
    price = 100 + 3 * X[:, 0] + X[:, 1] ** 2 - 2 * X[:, 2]
    return X, species, price


@pytest.fixture
def data_csv(tmp_path):
    X, species, price = dataset()
    rows = [[repr(float(a)), repr(float(b)), repr(float(c)), s, repr(float(p))]
            for (a, b, c), s, p in zip(X, species, price)]
    return write_csv(tmp_path / "data.csv", ["x0", "x1", "x2", "species", "price"], rows)


TRAIN_FAST = ["--epochs", "60", "--seed", "3"]


# ---- train and predict ----------------------------------------------------------------------

def test_classification_csv_trains_saves_and_predicts_labels(tmp_path, data_csv, capsys):
    model = tmp_path / "model.npz"
    code, out, err = run_cli(capsys, "train", data_csv, "--target", "species", "--features", "x0,x1,x2",
                             "--validation", "0.2", "--out", model, *TRAIN_FAST)
    assert code == 0, err
    assert err == ""  # no progress bar: stderr is not a terminal
    lines = out.splitlines()
    assert lines[0] == ('Data: ' + str(data_csv) + ', 240 rows (192 for training, 48 for validation), 3 features '
                        '(x0, x1, x2); target "species": classification, 3 classes (a, b, c).')
    assert lines[1].startswith("Network: [3, 64, 32, 3] relu; Adam lr 0.001, batch 32, 60 epochs, seed 3")
    assert "(validation)" in lines[2] and lines[3] == f"Model: {model}"

    net = fm.load(model)
    meta = net.metadata["cli"]
    assert meta["task"] == "classification" and meta["classes"] == ["a", "b", "c"]
    assert meta["features"] == ["x0", "x1", "x2"] and meta["target"] == "species"
    X, species, _ = dataset()
    assert np.allclose(meta["x_mean"], X.mean(axis=0), atol=0.3) and meta["y_mean"] is None

    code, out, err = run_cli(capsys, "predict", model, data_csv)
    assert code == 0, err
    header, rows = read_csv(out)
    assert header == ["species"] and len(rows) == 240
    predicted = np.array([row[0] for row in rows])
    assert np.mean(predicted == species) > 0.9

    # --out writes the same CSV, whole; --proba one probability per class
    code, _, err = run_cli(capsys, "predict", model, data_csv, "--out", tmp_path / "p.csv")
    assert code == 0, err
    assert (tmp_path / "p.csv").read_text() == out
    code, out, err = run_cli(capsys, "predict", model, data_csv, "--proba")
    header, rows = read_csv(out)
    assert header == ["a", "b", "c"]
    proba = np.array(rows, dtype=float)
    assert proba.shape == (240, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(np.array(["a", "b", "c"])[proba.argmax(axis=1)], predicted)


def test_regression_csv_standardizes_and_predicts_in_the_targets_units(tmp_path, data_csv, capsys):
    model = tmp_path / "r.npz"
    code, out, err = run_cli(capsys, "train", data_csv, "--target", "price", "--features", "x0,x1,x2",
                             "--out", model, "--epochs", "150", "--seed", "1", "--dtype", "float64")
    assert code == 0, err
    assert 'target "price": regression.' in out and "RMSE" in out
    meta = fm.load(model).metadata["cli"]
    _, _, price = dataset()
    assert meta["task"] == "regression" and meta["classes"] is None
    assert meta["y_mean"] == pytest.approx([price.mean()]) and meta["y_scale"] == pytest.approx([price.std()])

    code, out, err = run_cli(capsys, "predict", model, data_csv)
    assert code == 0, err
    header, rows = read_csv(out)
    assert header == ["price"]
    predicted = np.array(rows, dtype=float)[:, 0]
    assert np.sqrt(np.mean((predicted - price) ** 2)) < 0.25 * price.std()
    assert all(float(repr(float(v))) == v for v in predicted)  # float64: shortest round-trip text


def test_no_standardize_keeps_no_statistics(tmp_path, data_csv, capsys):
    model = tmp_path / "m.npz"
    code, _, err = run_cli(capsys, "train", data_csv, "--target", "price", "--features", "x0,x1,x2",
                           "--no-standardize", "--out", model, "--epochs", "5")
    assert code == 0, err
    meta = fm.load(model).metadata["cli"]
    assert meta["x_mean"] is meta["x_scale"] is meta["y_mean"] is meta["y_scale"] is None


def test_predict_picks_feature_columns_by_name(tmp_path, data_csv, capsys):
    model = tmp_path / "m.npz"
    assert run_cli(capsys, "train", data_csv, "--target", "species", "--features", "x0,x1,x2", "--out", model,
                   "--epochs", "5")[0] == 0
    _, first, _ = run_cli(capsys, "predict", model, data_csv, "--proba")
    _, rows = read_csv(data_csv)
    shuffled = write_csv(tmp_path / "new.csv", ["note", "x2", "x0", "x1"],
                         [["hello", r[2], r[0], r[1]] for r in rows])  # no target, an extra text column
    code, again, err = run_cli(capsys, "predict", model, shuffled, "--proba")
    assert code == 0, err
    assert again == first


def test_options_shape_the_network_and_a_seed_repeats_the_fit(tmp_path, data_csv, capsys):
    argv = ["train", data_csv, "--target", "species", "--layers", "16,16", "--activation", "tanh", "--residual",
            "--norm", "layer", "--dropout", "0.1", "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "16",
            "--epochs", "10", "--seed", "7", "--validation", "0.25"]
    assert run_cli(capsys, *argv, "--out", tmp_path / "a.npz")[0] == 0
    assert run_cli(capsys, *argv, "--out", tmp_path / "b.npz")[0] == 0
    a, b = fm.load(tmp_path / "a.npz"), fm.load(tmp_path / "b.npz")
    assert a.layer_sizes == (4, 16, 16, 3) and a.activations[0] == "tanh"
    kinds = [layer["type"] for layer in a.architecture]
    assert "residual" in kinds and "layer_norm" in kinds and "dropout" in kinds
    assert type(a.optimizer).__name__ == "SGD" and a.optimizer.lr == 0.05
    assert np.array_equal(a.params, b.params)
    assert a.metadata == b.metadata
    # no hidden layer: a logistic model
    assert run_cli(capsys, "train", data_csv, "--target", "species", "--layers", "", "--epochs", "2",
                   "--out", tmp_path / "c.npz")[0] == 0
    assert fm.load(tmp_path / "c.npz").layer_sizes == (4, 3)


def record_histories(monkeypatch) -> list:
    """The History of every Network.fit the CLI runs from now on."""
    histories, fit = [], fm.Network.fit

    def recording_fit(self, *args, **kwargs):
        histories.append(fit(self, *args, **kwargs))
        return histories[-1]

    monkeypatch.setattr(fm.Network, "fit", recording_fit)
    return histories


def test_patience_stops_early_and_needs_validation(tmp_path, data_csv, capsys, monkeypatch):
    histories = record_histories(monkeypatch)
    argv = ["train", data_csv, "--target", "price", "--features", "x0,x1,x2", "--epochs", "400", "--seed", "2",
            "--lr", "0.05", "--patience", "3", "--out", tmp_path / "m.npz"]
    code, out, err = run_cli(capsys, *argv, "--validation", "0.3")
    assert code == 0, err
    stopped = re.search(r"Trained (\d+) epochs \(stopped early; the weights of epoch (\d+), the best on validation\) "
                        r"in [^:]+: loss (\S+),", out)
    assert stopped and int(stopped.group(1)) < 400 and int(stopped.group(2)) == int(stopped.group(1)) - 3, out
    # the loss shown is the kept epoch's, not the last one's
    losses = histories[-1].history["loss"]
    assert stopped.group(3) == f"{losses[int(stopped.group(2)) - 1]:.6g}" != f"{losses[-1]:.6g}"
    code, _, err = run_cli(capsys, *argv)
    assert (code, err) == (2, "fastmlp train: error: --patience: needs --validation (early stopping watches the "
                              "validation loss)\n")


@pytest.mark.parametrize("values, task", [
    (["0", "1", "2", "1"] * 10, "classification"),      # few distinct integers: class labels
    (["1.0", "3", "1", "3"] * 10, "classification"),
    ([f"{0.1 * i}" for i in range(40)], "regression"),
    ([str(i) for i in range(40)], "regression"),        # more than 20 distinct integers
    (["yes", "no"] * 20, "classification"),
])
def test_task_is_chosen_by_the_targets_values(tmp_path, capsys, values, task):
    data = write_csv(tmp_path / "t.csv", ["x", "t"], [[str(i % 7), v] for i, v in enumerate(values)])
    code, out, err = run_cli(capsys, "train", data, "--target", "t", "--epochs", "2", "--out", tmp_path / "m.npz")
    assert code == 0, err
    assert f'target "t": {task}' in out
    if task == "classification" and values[0] == "1.0":
        assert fm.load(tmp_path / "m.npz").metadata["cli"]["classes"] == [1, 3]


def test_task_flag_overrides(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", ["x", "t"], [[str(i), str(i % 3)] for i in range(30)])
    code, out, err = run_cli(capsys, "train", data, "--target", "t", "--task", "regression", "--epochs", "2",
                             "--out", tmp_path / "m.npz")
    assert code == 0, err
    assert 'target "t": regression' in out
    code, out, _ = run_cli(capsys, "predict", tmp_path / "m.npz", data)
    assert read_csv(out)[0] == ["t"]
    float(read_csv(out)[1][0][0])


def test_npy_target_is_a_column_and_predict_drops_it(tmp_path, capsys):
    X, _, price = dataset(120)
    np.save(tmp_path / "d.npy", np.column_stack([price, X]))
    model = tmp_path / "m.npz"
    code, out, err = run_cli(capsys, "train", tmp_path / "d.npy", "--target", "0", "--out", model, "--epochs", "5")
    assert code == 0, err
    assert "target column 0: regression" in out
    meta = fm.load(model).metadata["cli"]
    assert meta["features"] is None and meta["target"] == 0
    _, with_target, _ = run_cli(capsys, "predict", model, tmp_path / "d.npy")
    np.save(tmp_path / "x.npy", X)
    code, features_only, err = run_cli(capsys, "predict", model, tmp_path / "x.npy")
    assert code == 0, err
    assert with_target == features_only and read_csv(with_target)[0] == ["prediction"]


def test_npz_with_string_labels(tmp_path, capsys):
    X, species, _ = dataset(150)
    np.savez(tmp_path / "d.npz", X=X, kind=species)
    model = tmp_path / "m.npz"
    code, out, err = run_cli(capsys, "train", tmp_path / "d.npz", "--target", "kind", "--out", model, "--epochs", "20")
    assert code == 0, err
    assert 'target "kind": classification, 3 classes (a, b, c)' in out
    code, out, err = run_cli(capsys, "predict", model, tmp_path / "d.npz")
    assert code == 0, err
    header, rows = read_csv(out)
    assert header == ["kind"] and {r[0] for r in rows} <= {"a", "b", "c"} and len(rows) == 150


def test_a_model_saved_from_python_predicts_every_column_in_order(tmp_path, capsys):
    net = fm.Network([2, 8, 3], loss="cross_entropy", seed=0)
    net.save(tmp_path / "m.npz")
    X = np.array([[0.5, -1.0], [2.0, 0.25]])
    data = write_csv(tmp_path / "d.csv", ["u", "v"], X.tolist())
    code, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", data)
    assert code == 0, err
    assert read_csv(out) == (["class"], [[str(c)] for c in net.predict(X.astype(np.float32))])


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_a_sigmoid_network_from_python_predicts_each_output(tmp_path, capsys, n_outputs):
    net = fm.Network([2, 4, n_outputs], loss="binary_cross_entropy", seed=1)
    net.save(tmp_path / "m.npz")
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-3.0, 1.0]])
    np.save(tmp_path / "x.npy", X)
    code, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", tmp_path / "x.npy")
    assert code == 0, err
    header, rows = read_csv(out)
    expected = net.predict(X.astype(np.float32)).reshape(3, -1)
    assert header == (["class"] if n_outputs == 1 else ["output_0", "output_1"])
    assert np.array_equal(np.array(rows, dtype=int), expected)
    code, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", tmp_path / "x.npy", "--proba")
    header, rows = read_csv(out)
    assert header == [f"output_{j}" for j in range(n_outputs)]
    assert np.allclose(np.array(rows, dtype=float), net.predict_proba(X.astype(np.float32)), atol=1e-6)


def test_progress_bar_on_a_terminal_goes_to_stderr(tmp_path, data_csv, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_progress_wanted", lambda: True)
    code, out, err = run_cli(capsys, "train", data_csv, "--target", "species", "--epochs", "7",
                             "--out", tmp_path / "m.npz")
    assert code == 0, err
    assert "7/7" in err and "Epoch" not in out and "7/7" not in out
    assert out.splitlines()[-1] == f"Model: {tmp_path / 'm.npz'}"


def test_quoted_cells_and_multi_line_fields_keep_line_numbers(tmp_path, capsys):
    data = tmp_path / "q.csv"
    data.write_text('x,"the, label"\n1,"two\nlines"\n2,b\n3,"x ""y"""\nbad,c\n', encoding="utf-8")
    code, _, err = run_cli(capsys, "train", data, "--target", "the, label", "--epochs", "1")
    assert code == 2
    assert err == f'fastmlp train: error: {data}:6: column "x": "bad" is not a number\n'


def test_subprocess_piped_train_and_predict_print_no_progress(tmp_path, data_csv):
    model = tmp_path / "m.npz"
    run = lambda *argv: subprocess.run([sys.executable, "-m", "fastmlp", *map(os.fspath, argv)],
                                       capture_output=True, text=True, timeout=120)
    result = run("train", data_csv, "--target", "species", "--out", model, "--epochs", "20")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    result = run("predict", model, data_csv, "--out", tmp_path / "p.csv")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 241
    result = run("predict", model, tmp_path / "missing.csv")
    assert result.returncode == 2
    assert result.stderr == f"fastmlp predict: error: {tmp_path / 'missing.csv'}: no such file\n"


# ---- bad files: one line, file:line, the column, exit 2 ------------------------------------------

BAD_CSV = {
    "not_a_number": ('a,b,y\n1,2,3\n1,abc,4\n', 'bad.csv:3: column "b": "abc" is not a number'),
    "empty_cell": ('a,b,y\n1,2,3\n1,,4\n', 'bad.csv:3: column "b": empty cell, expected a number'),
    "not_finite": ('a,b,y\n1,2,3\n1,inf,4\n', 'bad.csv:3: column "b": "inf" is not a finite number'),
    "short_row": ('a,b,y\n1,2,3\n\n1,2\n', 'bad.csv:4: 2 cells, but the header names 3 columns; column "y" is missing'),
    "long_row": ('a,b,y\n1,2,3,9\n', 'bad.csv:2: 4 cells, but the header names 3 columns; extra cell "9" in column 4'),
    "empty_file": ('', 'bad.csv:1: empty file, expected a header row naming the columns'),
    "blank_lines_only": ('\n\n', 'bad.csv:1: empty file, expected a header row naming the columns'),
    "header_only": ('a,b,y\n', 'bad.csv:2: no data rows after the header'),
    "missing_target": ('a,b,z\n1,2,3\n', 'bad.csv:1: no column "y" (the target); its columns: "a", "b", "z"'),
    "duplicate_name": ('a,a,y\n1,2,3\n', 'bad.csv:1: column "a" appears twice (columns 1 and 2)'),
    "unnamed_column": ('a,,y\n1,2,3\n', 'bad.csv:1: column 2 of the header has no name'),
    "empty_target": ('a,b,y\n1,2,3\n1,2,\n', 'bad.csv:3: column "y": empty cell, expected a target value'),
    "mixed_target": ('a,b,y\n1,2,3\n1,2,n/a\n', 'bad.csv:3: column "y": "n/a" is not a number (the other values '
                                                 'are numbers; --task classification takes every value for a label)'),
    "multi_line_cell": ('a,b,y\n1,2,3\n"x\ny",2,3\n', 'bad.csv:3: column "a": "x\\ny" is not a number'),
    "unclosed_quote": ('a,b,y\n1,2,3\n1,"2,3\n', 'bad.csv:3: not valid CSV (unexpected end of data)'),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_is_one_line_naming_file_line_and_column(tmp_path, capsys, case):
    text, message = BAD_CSV[case]
    (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, "train", tmp_path / "bad.csv", "--target", "y", "--epochs", "1",
                             "--out", tmp_path / "m.npz")
    assert code == 2
    assert err == f"fastmlp train: error: {tmp_path}{os.sep}{message}\n"
    assert out == "" and not (tmp_path / "m.npz").exists()


def test_long_and_odd_cells_are_shortened_and_stay_on_one_line(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text('a,y\n1,2\n"' + "é" * 100 + '\t\r\nz",1\n', encoding="utf-8")
    code, _, err = run_cli(capsys, "train", tmp_path / "bad.csv", "--target", "y")
    assert code == 2 and err.count("\n") == 1
    assert err.endswith(': column "a": "' + "é" * 40 + '…" is not a number\n')


def test_not_utf8_names_the_line(tmp_path, capsys):
    (tmp_path / "bad.csv").write_bytes(b"a,y\n1,2\n1,\xff\n")
    code, _, err = run_cli(capsys, "train", tmp_path / "bad.csv", "--target", "y")
    assert code == 2
    assert err == (f"fastmlp train: error: {tmp_path / 'bad.csv'}:3: not UTF-8 text (byte 0xff at character 3 "
                   "of the line); save the file as UTF-8\n")


def test_missing_data_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.csv", "--target", "y")
    assert (code, err) == (2, f"fastmlp train: error: {tmp_path / 'nope.csv'}: no such file\n")


def test_csv_target_is_required_and_the_error_lists_the_columns(tmp_path, data_csv, capsys):
    code, _, err = run_cli(capsys, "train", data_csv)
    assert code == 2
    assert err == (f'fastmlp train: error: {data_csv}: --target: name the target column (its columns: "x0", '
                   '"x1", "x2", "species", "price")\n')


@pytest.fixture
def trained(tmp_path, data_csv, capsys):
    model = tmp_path / "m.npz"
    assert run_cli(capsys, "train", data_csv, "--target", "species", "--features", "x0,x1,x2", "--out", model,
                   "--epochs", "2")[0] == 0
    return model


def test_predict_missing_feature_column(tmp_path, trained, capsys):
    data = write_csv(tmp_path / "d.csv", ["x0", "x2"], [[1, 2]])
    code, _, err = run_cli(capsys, "predict", trained, data)
    assert code == 2
    assert err == (f'fastmlp predict: error: {data}:1: no column "x1" (a feature the model was trained on); '
                   'its columns: "x0", "x2"\n')


def test_predict_non_numeric_cell(tmp_path, trained, capsys):
    data = write_csv(tmp_path / "d.csv", ["x0", "x1", "x2"], [[1, 2, 3], [1, 2, 3], [4, "abc", 6]])
    code, _, err = run_cli(capsys, "predict", trained, data)
    assert (code, err) == (2, f'fastmlp predict: error: {data}:4: column "x1": "abc" is not a number\n')


@pytest.mark.parametrize("kind", ["csv", "truncated", "text", "missing", "directory", "not_fastmlp"])
def test_a_model_file_that_is_not_one(tmp_path, trained, data_csv, capsys, kind):
    path = tmp_path / "model.npz"
    if kind == "csv":
        path = data_csv
    elif kind == "truncated":
        path.write_bytes(trained.read_bytes()[:300])
    elif kind == "text":
        path.write_text("hello\n")
    elif kind == "directory":
        path = tmp_path
    elif kind == "not_fastmlp":
        np.savez(path, X=np.zeros(3))
    code, out, err = run_cli(capsys, "predict", path, data_csv)
    assert code == 2 and out == ""
    assert err.startswith(f"fastmlp predict: error: {path}: ") and err.count("\n") == 1, err
    expected = {"csv": "not a fastmlp model file (not an .npz archive: it starts with b'x0,x')",
                "text": "not a fastmlp model file (not an .npz archive: it starts with b'hell')",
                "missing": "no such file", "directory": "is a directory, not a model file",
                "truncated": "not a fastmlp model file, or a truncated or corrupted one",
                "not_fastmlp": "not a fastmlp model file (no JSON header)"}[kind]
    assert expected in err


def test_predict_proba_of_a_regressor_and_bad_metadata(tmp_path, data_csv, capsys):
    model = tmp_path / "r.npz"
    code, _, err = run_cli(capsys, "train", data_csv, "--target", "price", "--out", model, "--epochs", "1")
    assert (code, err) == (2, f'fastmlp train: error: {data_csv}:2: column "species": "b" is not a number (every '
                              'column but the target is a feature; --features chooses them)\n')
    assert run_cli(capsys, "train", data_csv, "--target", "price", "--features", "x0,x1,x2", "--out", model,
                   "--epochs", "1")[0] == 0
    code, _, err = run_cli(capsys, "predict", model, data_csv, "--proba")
    assert (code, err) == (2, f"fastmlp predict: error: --proba: {model} is a regression model; it predicts "
                              "values, not classes\n")
    net = fm.load(model)
    net.metadata = {"cli": {**net.metadata["cli"], "x_mean": [0.0]}}
    net.save(model)
    code, _, err = run_cli(capsys, "predict", model, data_csv)
    assert code == 2
    assert err == f'fastmlp predict: error: {model}: metadata "cli" x_mean: expected null or a list of 3, got [0.0]\n'
    net.metadata = {"cli": {**net.metadata["cli"], "x_mean": [0.0] * 3, "x_scale": [1.0, 0.0, 1.0]}}
    net.save(model)
    code, _, err = run_cli(capsys, "predict", model, data_csv)
    assert (code, err) == (2, f'fastmlp predict: error: {model}: metadata "cli" x_scale: expected positive numbers, '
                              'got [1.0, 0.0, 1.0]\n')


def test_bad_arrays(tmp_path, capsys):
    X = np.ones((5, 3))
    X[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", X)
    np.savez(tmp_path / "noX.npz", A=X, y=np.ones(5))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "one.npy", np.ones(5))
    expected = {
        "nan.npy": "row 3, column 1 (from 0): nan is not a finite number",
        "noX.npz": 'no array "X" (the features); its arrays: "A", "y"',
        "obj.npy": "holds pickled objects; refused (nothing in it was run)",
        "one.npy": "the array has 1 column; expected features and a target",
    }
    for name, message in expected.items():
        code, _, err = run_cli(capsys, "train", tmp_path / name)
        assert (code, err) == (2, f"fastmlp train: error: {tmp_path / name}: {message}\n"), name


def test_a_classification_target_needs_two_classes(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[i, "same"] for i in range(5)])
    code, _, err = run_cli(capsys, "train", data, "--target", "y")
    assert (code, err) == (2, f'fastmlp train: error: {data}: target "y": every row has the label "same"; a '
                              'classifier needs two classes or more\n')


@pytest.mark.parametrize("argv", [
    ["--layers", "64,x"], ["--layers", "0"], ["--validation", "1"], ["--validation", "-0.1"], ["--dropout", "1"],
    ["--lr", "0"], ["--lr", "nan"], ["--optimizer", "rmsprop"], ["--task", "clustering"], ["--norm", "group"],
    ["--features", "a,,b"], ["--features", "x0,x1,x0"], ["--epochs", "0"], ["--bogus"],
])
def test_bad_train_options_are_usage_errors(tmp_path, data_csv, capsys, argv):
    code, out, err = run_cli(capsys, "train", data_csv, "--target", "species", *argv)
    assert code == 2
    assert err.startswith("usage: fastmlp") and "error:" in err


def test_unwritable_out_fails_before_reading(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.csv", "--target", "y", "--out", tmp_path / "no" / "m.npz")
    assert code == 2 and "cannot write" in err and "no such directory" in err
    code, _, err = run_cli(capsys, "predict", tmp_path / "m.npz", tmp_path / "d.csv", "--out", tmp_path)
    assert code == 2 and err == f"fastmlp predict: error: cannot write {tmp_path}: it is a directory\n"


def test_metadata_is_json_and_survives_pickle(trained):
    net = fm.load(trained)
    assert json.loads(json.dumps(net.metadata)) == net.metadata
    assert pickle.loads(pickle.dumps(net)).metadata == net.metadata


# ---- review fixes: files that are not what they are named, inputs kept, huge values, batch norm -----

@pytest.mark.parametrize("name, content, shown", [
    ("fake.npy", b"a,b,y\n1,2,3\n", "it starts with b'a,b,y\\n'"),
    ("fake.npz", b"a,b,y\n1,2,3\n", "it starts with b'a,b,'"),
    ("pickle.npy", pickle.dumps({"X": 1}), "it starts with b'\\x80\\x04\\x95"),
    ("empty.npz", b"", "an empty file"),
])
def test_a_file_named_npy_or_npz_that_is_no_numpy_file_is_named_so(tmp_path, trained, capsys, name, content, shown):
    (tmp_path / name).write_bytes(content)
    for argv in (["train", tmp_path / name], ["predict", trained, tmp_path / name]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1
        assert err.startswith(f"fastmlp {argv[0]}: error: {tmp_path / name}: not a NumPy file ({shown}"), err
        assert "pickled" not in err


def test_an_npz_member_that_is_no_npy_array(tmp_path, capsys):
    import zipfile
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as archive:
        archive.writestr("X", "1,2,3\n")
        archive.writestr("y.npy", b"")
    code, _, err = run_cli(capsys, "train", tmp_path / "z.npz")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fastmlp train: error: {tmp_path / 'z.npz'}: ")


def test_out_naming_an_input_file_is_refused_and_the_file_kept(tmp_path, data_csv, trained, capsys):
    data, model = data_csv.read_bytes(), trained.read_bytes()
    code, out, err = run_cli(capsys, "train", data_csv, "--target", "species", "--epochs", "1", "--out", data_csv)
    assert (code, out) == (2, "")
    assert err == f"fastmlp train: error: --out {data_csv}: that is the data file {data_csv}; writing there would " \
                  "destroy it\n"
    # the same file by another name
    other = tmp_path / "sub"
    other.mkdir()
    for out_path, role, input_path in ((trained, "model", trained), (data_csv, "data file", data_csv),
                                       (other / ".." / "data.csv", "data file", data_csv)):
        code, out, err = run_cli(capsys, "predict", trained, data_csv, "--out", out_path)
        assert (code, out) == (2, ""), err
        assert err == (f"fastmlp predict: error: --out {out_path}: that is the {role} {input_path}; writing there "
                       "would destroy it\n")
    os.symlink(data_csv, tmp_path / "link.csv")
    code, _, err = run_cli(capsys, "train", tmp_path / "link.csv", "--target", "species", "--out", data_csv)
    assert code == 2 and "that is the data file" in err
    assert data_csv.read_bytes() == data and trained.read_bytes() == model


def test_huge_features_and_targets_are_standardized_without_overflow(tmp_path, capsys):
    X, _, price = dataset(120)
    data = write_csv(tmp_path / "d.csv", ["a", "b", "c", "y"],
                     [[repr(float(v) * 1e200) for v in row] + [repr(float(p) * 1e250)] for row, p in zip(X, price)])
    code, out, err = run_cli(capsys, "train", data, "--target", "y", "--epochs", "30", "--seed", "1",
                             "--out", tmp_path / "m.npz")
    assert code == 0 and err == "", err
    rmse = float(re.search(r"RMSE (\S+) \(training\)", out).group(1))
    assert 0 < rmse < 4 * 1e250  # the target's standard deviation is about 3.3e250
    meta = fm.load(tmp_path / "m.npz").metadata["cli"]
    assert all(1e199 < s < 1e201 for s in meta["x_scale"]) and 1e249 < meta["y_scale"][0] < 1e251
    code, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", data)
    assert code == 0 and err == ""
    values = np.array([float(row[0]) for row in read_csv(out)[1]])
    assert np.all(np.isfinite(values)) and np.abs(values / 1e250 - price).max() < 20


def test_a_value_that_does_not_fit_the_dtype_names_its_cell(tmp_path, capsys):
    rows = [[i, i % 3, 2 * i] for i in range(12)]
    rows[4][0] = "1e39"
    data = write_csv(tmp_path / "d.csv", ["a", "b", "y"], rows)
    argv = ["train", data, "--target", "y", "--task", "regression", "--epochs", "2", "--no-standardize",
            "--out", tmp_path / "m.npz"]
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == f'fastmlp train: error: {data}:6: column "a": 1e+39 does not fit float32; use --dtype float64\n'
    assert run_cli(capsys, *argv, "--dtype", "float64")[0] == 0
    rows[4][0], rows[7][2] = 4, "-3e38"
    rows[9][2] = "-1e39"
    data = write_csv(tmp_path / "d.csv", ["a", "b", "y"], rows)
    code, _, err = run_cli(capsys, *argv)
    assert err == f'fastmlp train: error: {data}:11: column "y": -1e+39 does not fit float32; use --dtype float64\n'
    # standardizing: a distance to the mean beyond float64
    data = write_csv(tmp_path / "e.csv", ["a", "y"], [["1.7e308", 1], ["1.7e308", 2], ["-1.7e308", 3], ["0", 4]])
    code, _, err = run_cli(capsys, "train", data, "--target", "y", "--task", "regression", "--epochs", "1",
                           "--out", tmp_path / "m.npz")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f'fastmlp train: error: {data}:4: column "a": -1.7e+308 standardized (mean ')
    assert err.endswith(") overflows float64; rescale the column\n")


def test_predict_names_a_value_that_does_not_fit_the_models_dtype(tmp_path, trained, capsys):
    data = write_csv(tmp_path / "p.csv", ["x0", "x1", "x2"], [[0, 0, 0], [0, "1e300", 0]])
    code, out, err = run_cli(capsys, "predict", trained, data)
    assert (code, out) == (2, "")
    assert re.fullmatch(rf'fastmlp predict: error: {re.escape(str(data))}:3: column "x1": 1e\+300 standardized '
                        r"\(mean \S+, scale \S+\) is \S+, which does not fit float32, the model's dtype\n", err), err
    fm.Network([2, 3, 1], seed=0).save(tmp_path / "python.npz")  # no metadata: the values go in as they are
    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0], [3.0, -5e38]]))
    code, _, err = run_cli(capsys, "predict", tmp_path / "python.npz", tmp_path / "x.npy")
    assert err == (f"fastmlp predict: error: {tmp_path / 'x.npy'}: row 1, column 1 (from 0): -5e+38 does not fit "
                   "float32, the model's dtype\n")


@pytest.mark.parametrize("n_rows, validation, batch, used", [
    (33, "0", 32, 31),      # 33 rows in batches of 32 would leave one
    (41, "0.2", 32, 31),    # 8 rows held out: 33 for training
    (3, "0", 2, 3),         # no size from 2 down works: the whole set
    (64, "0", 32, None),    # nothing to change
])
def test_batch_norm_lowers_a_batch_size_that_would_leave_one_row(tmp_path, capsys, n_rows, validation, batch, used):
    X, species, _ = dataset(n_rows)
    data = write_csv(tmp_path / "d.csv", ["a", "b", "c", "y"], [[*row, s] for row, s in zip(X.tolist(), species)])
    code, out, err = run_cli(capsys, "train", data, "--target", "y", "--task", "classification", "--norm", "batch",
                             "--batch-size", str(batch), "--validation", validation, "--epochs", "3",
                             "--out", tmp_path / "m.npz")
    assert code == 0, err
    n_train = n_rows - round(n_rows * float(validation))
    note = "" if used is None else (f"batch {used} (not {batch}: {n_train} training rows would leave a last batch of "
                                    "one row, which batch norm cannot normalize)")
    assert (note or f"batch {batch}, ") in out.splitlines()[1]


def test_batch_norm_with_batches_or_a_training_set_of_one_row(tmp_path, data_csv, capsys):
    code, _, err = run_cli(capsys, "train", data_csv, "--target", "species", "--norm", "batch", "--batch-size", "1",
                           "--epochs", "1", "--out", tmp_path / "m.npz")
    assert (code, err) == (2, "fastmlp train: error: --batch-size 1: batch norm (--norm batch) needs batches of 2 "
                              "rows or more\n")
    data = write_csv(tmp_path / "d.csv", ["a", "y"], [[1, "u"], [2, "v"]])
    code, _, err = run_cli(capsys, "train", data, "--target", "y", "--norm", "batch", "--validation", "0.5",
                           "--epochs", "1", "--out", tmp_path / "m.npz")
    assert (code, err) == (2, f"fastmlp train: error: --norm batch: {data} leaves 1 row for training; batch norm "
                              "needs 2 or more\n")


def test_patience_that_runs_to_the_end_says_which_epoch_it_kept(tmp_path, data_csv, capsys, monkeypatch):
    histories = record_histories(monkeypatch)
    code, out, err = run_cli(capsys, "train", data_csv, "--target", "price", "--features", "x0,x1,x2",
                             "--epochs", "40", "--seed", "2", "--lr", "0.05", "--patience", "30",
                             "--validation", "0.3", "--out", tmp_path / "m.npz")
    assert code == 0, err
    history = histories[-1]
    kept = history.best_epoch
    summary = out.splitlines()[2]
    assert len(history.history["loss"]) == 40 and "stopped early" not in summary
    if kept == 39:
        assert summary.startswith("Trained 40 epochs in ")
    else:
        assert summary.startswith(f"Trained 40 epochs (the weights of epoch {kept + 1}, the best on validation) in ")
    assert f": loss {history.history['loss'][kept]:.6g}," in summary


def test_one_class_error_quotes_the_label_as_written(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[i, 1] for i in range(5)])
    code, _, err = run_cli(capsys, "train", data, "--target", "y", "--epochs", "1", "--out", tmp_path / "m.npz")
    assert (code, err) == (2, f'fastmlp train: error: {data}: target "y": every row has the label "1"; a '
                              'classifier needs two classes or more\n')


def test_a_model_trained_from_npy_drops_the_target_column_of_a_csv_too(tmp_path, capsys):
    X, _, price = dataset(60)
    table = np.column_stack([price, X])
    np.save(tmp_path / "d.npy", table)
    model = tmp_path / "m.npz"
    assert run_cli(capsys, "train", tmp_path / "d.npy", "--target", "0", "--out", model, "--epochs", "3")[0] == 0
    _, from_npy, _ = run_cli(capsys, "predict", model, tmp_path / "d.npy")
    data = write_csv(tmp_path / "d.csv", ["price", "a", "b", "c"], [[repr(v) for v in row] for row in table.tolist()])
    code, from_csv, err = run_cli(capsys, "predict", model, data)
    assert code == 0, err
    assert from_csv == from_npy
    data = write_csv(tmp_path / "e.csv", ["p", "q", "r", "s", "t"], [[1, 2, 3, 4, 5]])
    code, _, err = run_cli(capsys, "predict", model, data)
    assert (code, err) == (2, f"fastmlp predict: error: {data}:1: 5 columns; the model takes 3 features (it has no "
                              "feature names, so every column is one, in order)\n")


# ---- one process's block of rows (mpiexec -n N fastmlp train): read_training_data(part=...) -----


def tricky_csv(path, n=23):
    """A byte-order mark, quoted cells with commas and line breaks, blank lines, CRLF."""
    rng = np.random.default_rng(4)
    lines = ['\ufeffx0,"x, 1",label']
    for i in range(n):
        label = f'"two\r\nlines {i % 3}"' if i % 5 == 0 else f"c{i % 3}"
        lines += [f"{rng.normal()!r},{rng.normal()!r},{label}"] + ([""] if i % 7 == 3 else [])
    path.write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    return path


def array_files(tmp_path, n=23):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    np.save(tmp_path / "a.npy", np.column_stack([X, y[:, 0]]))
    np.savez(tmp_path / "stored.npz", X=X, y=y)
    np.savez_compressed(tmp_path / "compressed.npz", X=X, y=np.array([f"s{i % 4}" for i in range(n)]))
    np.savez_compressed(tmp_path / "fortran.npz", X=np.asfortranarray(X), y=y[:, :1].copy(order="F"))
    return ["a.npy", "stored.npz", "compressed.npz", "fortran.npz"]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("rows_per_mark", [3, datafiles.ROWS_PER_MARK])
def test_the_blocks_of_the_processes_are_the_file_in_order(tmp_path, monkeypatch, size, rows_per_mark):
    """Block r holds rows [⌊n·r/size⌋, ⌊n·(r+1)/size⌋); together the blocks are what one
    process reads, values, labels and the lines or rows that messages name (the CSV's
    second pass resuming from a mark of the first, or from the top)."""
    monkeypatch.setattr(datafiles, "ROWS_PER_MARK", rows_per_mark)
    names = [tricky_csv(tmp_path / "t.csv").name, *array_files(tmp_path)]
    for name in names:
        path = os.fspath(tmp_path / name)
        target = "label" if name.endswith(".csv") else None
        whole = datafiles.read_training_data(path, target, None)
        parts = [datafiles.read_training_data(path, target, None, part=(r, size)) for r in range(size)]
        n = whole.X.shape[0]
        assert [p.first_row for p in parts] == [n * r // size for r in range(size)], name
        assert all(p.file_rows == n and p.layout == parts[0].layout for p in parts), name
        np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), whole.X, err_msg=name)
        y = np.concatenate([p.y_texts if p.y_texts is not None and whole.y.dtype.kind == "U" else p.y for p in parts])
        np.testing.assert_array_equal(y, whole.y, err_msg=name)
        assert [p.X_cells.at(i, 1) for p in parts for i in range(p.X.shape[0])] == \
            [whole.X_cells.at(i, 1) for i in range(n)], name


def test_a_block_reads_only_its_rows(tmp_path):
    """Cells outside the block are never parsed: other rows that are not numbers do not
    stop it (the first pass over a CSV checks only its structure)."""
    rows = [[str(i), "zzz" if i < 10 or i >= 20 else str(i % 2)] for i in range(30)]
    path = write_csv(tmp_path / "d.csv", ["x", "label"], [[x if 10 <= i < 20 else "bad", y]
                                                        for i, (x, y) in enumerate(rows)])
    middle = datafiles.read_training_data(os.fspath(path), "label", None, part=(1, 3))
    assert middle.X[:, 0].tolist() == list(range(10, 20)) and middle.y.tolist() == [0, 1] * 5
    assert middle.X_cells.lines == list(range(12, 22))
    with pytest.raises(datafiles.DataFileError, match=r'd.csv:2: column "x": "bad" is not a number'):
        datafiles.read_training_data(os.fspath(path), "label", None, part=(0, 3))

    values = np.arange(60.0).reshape(30, 2)
    values[[0, 29], 0] = np.nan
    np.save(tmp_path / "d.npy", values)
    np.savez_compressed(tmp_path / "d.npz", X=values[:, :1], y=values[:, 1])
    for name in ("d.npy", "d.npz"):
        middle = datafiles.read_training_data(os.fspath(tmp_path / name), None, None, part=(1, 3))
        assert middle.X[:, 0].tolist() == values[10:20, 0].tolist(), name


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_a_bad_csv_fails_the_blocks_as_it_fails_one_process(tmp_path, case):
    """A problem of the file's structure fails every block alike; a bad cell fails the
    block that holds it: the first block that fails names what one process names."""
    text, _ = BAD_CSV[case]
    (tmp_path / "bad.csv").write_text(text + "1,2,3\n" * (case in ("long_row", "missing_target", "not_finite")),
                                      encoding="utf-8")
    path = os.fspath(tmp_path / "bad.csv")

    def error(part=None):
        try:
            datafiles.read_training_data(path, "y", None, part)
        except datafiles.DataFileError as failure:
            return str(failure)
        return None

    whole, parts = error(), [error((r, 2)) for r in range(2)]
    assert next((e for e in parts if e is not None), None) == whole, (whole, parts)


def test_not_utf8_and_nul_bytes_fail_every_block_as_one_process(tmp_path):
    for name, data in (("bom.csv", "\ufeffa,y\n1,2\n".encode() + b"1,\xff2\n3,4\n"),
                       ("late.csv", b"a,y\n1,2\n3,4\n5,\xc3(\n"), ("nul.csv", b"a,y\n1,2\n3,\x004\n5,6\n")):
        (tmp_path / name).write_bytes(data)
        path = os.fspath(tmp_path / name)
        with pytest.raises(datafiles.DataFileError) as whole:
            datafiles.read_training_data(path, "y", None)
        for rank in range(2):
            with pytest.raises(datafiles.DataFileError) as part:
                datafiles.read_training_data(path, "y", None, part=(rank, 2))
            assert str(part.value) == str(whole.value), name


def test_fewer_rows_than_processes_and_bad_arrays_in_blocks(tmp_path, capsys):
    write_csv(tmp_path / "two.csv", ["x", "y"], [[1, 2], [3, 4]])
    with pytest.raises(datafiles.DataFileError, match=r"two.csv: 2 data rows for 3 processes; every process needs "):
        datafiles.read_training_data(os.fspath(tmp_path / "two.csv"), "y", None, part=(2, 3))
    X = np.ones((5, 3))
    np.savez(tmp_path / "noX.npz", A=X, y=np.ones(5))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "objy.npz", X=X, y=np.array([{"a": 1}] * 5, dtype=object))
    np.savez(tmp_path / "short.npz", X=X, y=np.ones(4))
    with open(tmp_path / "single.npz", "wb") as f:
        np.save(f, X)
    for name, message in {"noX.npz": 'no array "X" (the features); its arrays: "A", "y"',
                          "obj.npy": "holds pickled objects; refused (nothing in it was run)",
                          "objy.npz": "holds pickled objects; refused (nothing in it was run)",
                          "short.npz": "y has shape (4,), expected (5,) (one value per row of X)",
                          "single.npz": "a single array (.npy) named .npz; rename it to .npy"}.items():
        with pytest.raises(datafiles.DataFileError) as part:
            datafiles.read_training_data(os.fspath(tmp_path / name), None, None, part=(0, 2))
        assert str(part.value) == f"{tmp_path / name}: {message}", name

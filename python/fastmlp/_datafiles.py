"""Reading the data files of ``fastmlp train`` and ``fastmlp predict``: CSV with a
header row, NumPy ``.npy`` (one 2-D array) and ``.npz`` (named arrays).

Every problem in a file is a :class:`DataFileError` whose message is one line that
starts with the file and, for CSV, the line (as compilers and grep do), then names
the column and quotes the cell::

    data.csv:17: column "age": "abc" is not a number
    data.csv:9: 4 cells, but the header (line 1) names 5 columns; column "label" is missing
    data.npy: row 16, column 2 (from 0): nan is not a finite number

CSV is read with the stdlib csv module (comma-separated, double quotes, UTF-8 with
or without a byte-order mark); blank lines are skipped. Cells stay text until a
column is asked for as numbers, so that a target column may hold labels. Arrays
are loaded with ``allow_pickle=False``: a file holding a pickled object is refused,
and nothing in it runs. Reading whole files into memory is deliberate: the network
trains on arrays in memory anyway.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ._files import NPY_MAGIC, ZIP_MAGIC

__all__ = ["DataFileError", "Cells", "CsvTable", "Samples", "quote", "read_csv", "read_array", "read_arrays",
           "file_kind", "read_training_data", "read_features"]

_QUOTE_LIMIT = 40  # characters of a cell shown in a message


class DataFileError(ValueError):
    """A problem in a data file; the message names the file and where in it."""


def quote(text: str) -> str:
    """A cell as a message shows it: in double quotes, escaped (so it stays on one
    line), shortened past 40 characters."""
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(text) <= _QUOTE_LIMIT else json.dumps(text[:_QUOTE_LIMIT], ensure_ascii=False)[:-1] + '…"'


def file_kind(path: str) -> str:
    """"npy", "npz" or "csv" (any other name) by the file's extension."""
    extension = os.path.splitext(path)[1].lower()
    return {".npy": "npy", ".npz": "npz"}.get(extension, "csv")


def _not_found(path: str, error: OSError) -> DataFileError:
    if isinstance(error, FileNotFoundError):
        return DataFileError(f"{path}: no such file")
    if isinstance(error, IsADirectoryError):
        return DataFileError(f"{path}: is a directory, not a file")
    return DataFileError(f"{path}: cannot read it ({error.strerror or error})")


def _parse_number(cell: str) -> float | None:
    """The cell's value, or None when it is not a finite number. Python's float()
    syntax, without its digit-grouping underscores."""
    if "_" in cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _why_not_a_number(cell: str) -> str:
    if not cell.strip():
        return "empty cell, expected a number"
    try:
        float(cell)
    except ValueError:
        return f"{quote(cell)} is not a number"
    if "_" in cell:
        return f"{quote(cell)} is not a number"
    return f"{quote(cell)} is not a finite number"


@dataclass
class Cells:
    """Where the values of an array read from a file came from, so that a message
    about value [i, j] names the file, the line (CSV) or row (arrays), and the column."""

    path: str
    lines: list[int] | None  # CSV: the line where each row starts; None for arrays
    columns: list[str]  # each column as a message names it: 'column "age"', 'column 3 (from 0)'
    array: str = ""  # .npz: the array's name

    def at(self, row: int, column: int) -> str:
        if self.lines is not None:
            return f"{self.path}:{self.lines[row]}: {self.columns[column]}"
        return f"{self.path}: {self.array + ' ' if self.array else ''}row {row}, {self.columns[column]}"


def _array_columns(indices) -> list[str]:
    return [f"column {i} (from 0)" for i in indices]


# ---- CSV ----------------------------------------------------------------------------------------

@dataclass
class CsvTable:
    """A CSV file's header and rows, as text; ``lines[i]`` is the line where row i starts."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str, *, role: str = "") -> int:
        """The index of the column named ``name``; an error naming the header line otherwise."""
        try:
            return self.header.index(name)
        except ValueError:
            shown = ", ".join(quote(h) for h in self.header[:20]) + (", …" if len(self.header) > 20 else "")
            raise DataFileError(f"{self.path}:1: no column {quote(name)}{role}; its columns: {shown}") from None

    def numbers(self, indices: list[int]) -> np.ndarray:
        """The columns ``indices`` as float64 (n_rows, len(indices)); every cell must be a
        finite number (an error names the first that is not: line, column and cell)."""
        out = np.empty((len(self.rows), len(indices)), dtype=np.float64)
        for j, index in enumerate(indices):
            for i, row in enumerate(self.rows):
                value = _parse_number(row[index])
                if value is None:
                    raise self.cell_error(i, index, _why_not_a_number(row[index]))
                out[i, j] = value
        return out

    def cells(self, indices: list[int]) -> Cells:
        """Where the values of :meth:`numbers` (``indices``) come from."""
        return Cells(self.path, self.lines, [f"column {quote(self.header[i])}" for i in indices])

    def texts(self, index: int) -> list[str]:
        return [row[index] for row in self.rows]

    def cell_error(self, row: int, index: int, problem: str) -> DataFileError:
        return DataFileError(f"{self.path}:{self.lines[row]}: column {quote(self.header[index])}: {problem}")


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at character "
                            f"{column} of the line); save the file as UTF-8") from None


def read_csv(path: str) -> CsvTable:
    """The CSV file at ``path``: a header row naming every column, then at least one
    row of as many cells. Refuses an empty file, a header with an empty or repeated
    name, a row of another length (naming the missing or extra column) and a file
    that is not UTF-8 text."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise _not_found(path, error) from None
    text = _decode(path, data)
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise DataFileError(f"{path}:{line}: holds a NUL byte: a binary file, not CSV")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    line = 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if header is None:
                header = [name.strip() for name in row]
                _check_header(path, start, header)
                continue
            if len(row) != len(header):
                raise DataFileError(_ragged(path, start, row, header))
            rows.append(row)
            lines.append(start)
    except csv.Error as error:
        raise DataFileError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None
    if header is None:
        raise DataFileError(f"{path}:1: empty file, expected a header row naming the columns")
    if not rows:
        raise DataFileError(f"{path}:{line}: no data rows after the header")
    return CsvTable(path, header, rows, lines)


def _check_header(path: str, line: int, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            raise DataFileError(f"{path}:{line}: column {i + 1} of the header has no name")
        if name in seen:
            raise DataFileError(f"{path}:{line}: column {quote(name)} appears twice (columns {seen[name] + 1} "
                                f"and {i + 1})")
        seen[name] = i


def _ragged(path: str, line: int, row: list[str], header: list[str]) -> str:
    if len(row) < len(header):
        missing = header[len(row)]
        more = f" (and {len(header) - len(row) - 1} more)" if len(header) - len(row) > 1 else ""
        return (f"{path}:{line}: {len(row)} cells, but the header names {len(header)} columns; "
                f"column {quote(missing)}{more} is missing")
    return (f"{path}:{line}: {len(row)} cells, but the header names {len(header)} columns; "
            f"extra cell {quote(row[len(header)])} in column {len(header) + 1}")


# ---- .npy and .npz ------------------------------------------------------------------------------



def _load(path: str):
    try:
        with open(path, "rb") as f:
            start = f.read(len(NPY_MAGIC))
            if not start.startswith((NPY_MAGIC, ZIP_MAGIC)):
                # np.load takes anything else for a pickle, and would call it one.
                shown = start[:len(ZIP_MAGIC if file_kind(path) == "npz" else NPY_MAGIC)]
                raise DataFileError(f"{path}: not a NumPy file ("
                                    + (f"it starts with {shown!r})" if start else "an empty file)"))
            f.seek(0)
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded as archive:
                    arrays = {name: archive[name] for name in archive.files}
                for name, value in arrays.items():
                    if not isinstance(value, np.ndarray):  # NpzFile gives a member that is no .npy as bytes
                        raise DataFileError(f"{path}: its member {quote(name)} is not a .npy array")
                return arrays
            return loaded
    except DataFileError:
        raise
    except OSError as error:
        if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise _not_found(path, error) from None
        raise DataFileError(f"{path}: not a NumPy file, or a truncated one ({error})") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise DataFileError(f"{path}: holds pickled objects; refused (nothing in it was run)") from None
        raise DataFileError(f"{path}: not a NumPy file, or a truncated one ({error})") from None
    except (EOFError, zipfile.BadZipFile, KeyError) as error:
        raise DataFileError(f"{path}: not a NumPy file, or a truncated or corrupted one "
                            f"({type(error).__name__}: {error})") from None


def read_array(path: str) -> np.ndarray:
    """The single array of an ``.npy`` file."""
    loaded = _load(path)
    if isinstance(loaded, dict):
        raise DataFileError(f"{path}: an .npz archive named .npy; rename it to .npz")
    return loaded


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file."""
    loaded = _load(path)
    if not isinstance(loaded, dict):
        raise DataFileError(f"{path}: a single array (.npy) named .npz; rename it to .npy")
    return loaded


def _member(path: str, arrays: dict, name: str, role: str) -> np.ndarray:
    if name not in arrays:
        names = ", ".join(quote(n) for n in arrays) or "none"
        raise DataFileError(f"{path}: no array {quote(name)}{role}; its arrays: {names}")
    return arrays[name]


def _finite_numbers(array: np.ndarray, cells: Cells) -> np.ndarray:
    """``array`` (2-D) as float64, refusing what is not a real number or not finite."""
    if array.dtype.kind not in "biuf":
        raise DataFileError(f"{cells.path}: {cells.array or 'the array'} holds {array.dtype} values, expected numbers")
    values = array.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        more = f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""
        raise DataFileError(f"{cells.at(i, j)}: {values[i, j]} is not a finite number{more}")
    return values


def _as_2d(path: str, array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise DataFileError(f"{path}: {name} has shape {array.shape}, expected (rows, columns)")
    if array.shape[0] == 0:
        raise DataFileError(f"{path}: {name} has no rows")
    return array


# ---- what the commands read ---------------------------------------------------------------------

@dataclass
class Samples:
    """Training samples read from a file.

    ``X``: float64 (n, d), finite. ``y``: the target as read, (n,) or (n, k): float64
    when it is numeric, str (CSV text, .npz strings) otherwise; ``y_problem`` then
    says why it is not numeric (an error message naming the first cell that is not a
    number), and ``y_mixed`` whether other cells are numbers. ``feature_names``: the
    CSV columns of X (None for arrays); ``target``: the CSV column or .npz array name,
    or the .npy column index. ``X_cells`` and ``y_cells`` say where each value of X
    and of y (as 2-D) came from, for messages."""

    path: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] | None
    target: str | int
    X_cells: Cells
    y_cells: Cells
    y_problem: str | None = None
    y_mixed: bool = False


def read_training_data(path: str, target: str | None, features: list[str] | None) -> Samples:
    """X and y from a CSV (``target`` names the column; ``features`` the feature
    columns, by default every other one), an ``.npy`` (a 2-D array; ``target`` is a
    column index, default the last) or an ``.npz`` (arrays "X" and ``target``,
    default "y")."""
    kind = file_kind(path)
    if kind == "csv":
        return _training_csv(path, target, features)
    if features is not None:
        raise DataFileError(f"{path}: --features names CSV columns; an .{kind} file has none")
    if kind == "npy":
        array = _as_2d(path, read_array(path), "the array")
        if array.shape[1] < 2:
            raise DataFileError(f"{path}: the array has {array.shape[1]} column; expected features and a target")
        index = _column_index(path, target, array.shape[1])
        values = _finite_numbers(array, Cells(path, None, _array_columns(range(array.shape[1]))))
        features = [i for i in range(array.shape[1]) if i != index]
        return Samples(path, values[:, features], values[:, index], None, index,
                       Cells(path, None, _array_columns(features)), Cells(path, None, _array_columns([index])))
    arrays = read_arrays(path)
    target = "y" if target is None else target
    X = _as_2d(path, _member(path, arrays, "X", " (the features)"), "X")
    X_cells = Cells(path, None, _array_columns(range(X.shape[1])), "X")
    X = _finite_numbers(X, X_cells)
    y = _member(path, arrays, target, " (the target; --target names another)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise DataFileError(f"{path}: {target} has shape {y.shape}, expected ({X.shape[0]},) (one value per row of X)")
    y_cells = Cells(path, None, _array_columns(range(1 if y.ndim == 1 else y.shape[1])), target)
    if y.dtype.kind in "US":
        return Samples(path, X, y.astype(str), None, target, X_cells, y_cells,
                       f"{path}: {target} holds text, not numbers")
    y = _finite_numbers(y.reshape(y.shape[0], -1), y_cells).reshape(y.shape)
    return Samples(path, X, y, None, target, X_cells, y_cells)


def _column_index(path: str, target: str | None, n_columns: int) -> int:
    if target is None:
        return n_columns - 1
    try:
        index = int(target)
    except ValueError:
        raise DataFileError(f"{path}: --target of an .npy file is a column index (0..{n_columns - 1}, or -1 for "
                            f"the last), got {quote(target)}") from None
    if not -n_columns <= index < n_columns:
        raise DataFileError(f"{path}: --target {index}: the array has {n_columns} columns (0..{n_columns - 1})")
    return index % n_columns


def _training_csv(path: str, target: str | None, features: list[str] | None) -> Samples:
    table = read_csv(path)
    if target is None:
        raise DataFileError(f"{path}: --target: name the target column (its columns: "
                            f"{', '.join(quote(h) for h in table.header[:20])})")
    target_index = table.column(target, role=" (the target)")
    if features is None:
        indices = [i for i in range(len(table.header)) if i != target_index]
        if not indices:
            raise DataFileError(f"{path}:1: only the target column {quote(target)}; no feature columns")
    else:
        indices = [table.column(name, role=" (a feature)") for name in features]
        if target_index in indices:
            raise DataFileError(f"{path}: --features names the target column {quote(target)}")
    try:
        X = table.numbers(indices)
    except DataFileError as error:
        first = table.rows[0]
        if features is not None or all(_parse_number(first[i]) is not None or not first[i].strip() for i in indices):
            raise
        # A column of text from its first row on: a label or an identifier, not meant as a feature.
        raise DataFileError(f"{error} (every column but the target is a feature; --features chooses them)") from None
    X_cells, y_cells = table.cells(indices), table.cells([target_index])
    texts = table.texts(target_index)
    for i, cell in enumerate(texts):
        if not cell.strip():
            raise table.cell_error(i, target_index, "empty cell, expected a target value")
    values = [_parse_number(cell) for cell in texts]
    if all(v is not None for v in values):
        return Samples(path, X, np.array(values, dtype=np.float64), [table.header[i] for i in indices], target,
                       X_cells, y_cells)
    first = next(i for i, v in enumerate(values) if v is None)
    problem = str(table.cell_error(first, target_index, _why_not_a_number(texts[first])))
    return Samples(path, X, np.array([cell.strip() for cell in texts], dtype=str), [table.header[i] for i in indices],
                   target, X_cells, y_cells, problem, any(v is not None for v in values))


def read_features(path: str, feature_names: list[str] | None, n_features: int, target) -> tuple[np.ndarray, Cells]:
    """The features a model needs, float64 (n, n_features), and where they came from:
    from a CSV by name when the model knows its feature names; else the columns of a
    CSV or an ``.npy`` in order, or the array "X" of an ``.npz``. A CSV or ``.npy``
    with one column more than the model's features is the kind of file a model
    trained from an ``.npy`` saw: its target column (index ``target``) is dropped."""
    kind = file_kind(path)
    if kind == "csv":
        table = read_csv(path)
        if feature_names is not None:
            indices = [table.column(name, role=" (a feature the model was trained on)") for name in feature_names]
        else:
            indices = _columns_in_order(f"{path}:1", len(table.header), n_features, target, True)
        return table.numbers(indices), table.cells(indices)
    if kind == "npy":
        array, name = _as_2d(path, read_array(path), "the array"), ""
    else:
        array, name = _as_2d(path, _member(path, read_arrays(path), "X", " (the features)"), "X"), "X"
    indices = _columns_in_order(path, array.shape[1], n_features, target if kind == "npy" else None, False)
    cells = Cells(path, None, _array_columns(indices), name)
    return _finite_numbers(array[:, indices], cells), cells


def _columns_in_order(where: str, n_columns: int, n_features: int, target, csv_file: bool) -> list[int]:
    """The columns of a file read in order: all of them, or all but the target column
    of the training file (an .npy column index) when there is one column more."""
    if n_columns == n_features + 1 and isinstance(target, int) and not isinstance(target, bool) \
            and 0 <= target <= n_features:
        return [i for i in range(n_columns) if i != target]
    if n_columns != n_features:
        why = " (it has no feature names, so every column is one, in order)" if csv_file else ""
        raise DataFileError(f"{where}: {n_columns} columns; the model takes {n_features} features{why}")
    return list(range(n_columns))

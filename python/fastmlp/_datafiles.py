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

One process of several (``mpiexec -n N fastmlp train``) reads only its block of a
file's rows, ``part=(rank, size)``: rows [⌊n·rank/size⌋, ⌊n·(rank+1)/size⌋) of the
file's n data rows (:func:`block`). A CSV file is read twice as a stream: a first
pass tokenizes every row (the stdlib csv module, in C) to count them and check the
file's structure (encoding, header, every row's cell count), so every process finds
the same problems in it, and marks where every 4096th row starts; a second pass
starts at the last mark before the block, tokenizes to its end and parses the
numbers of its rows only (the costly part, done in Python per cell). An
``.npy`` is memory-mapped and the block copied out of it. From an ``.npz`` only the
members X and the target are read, and of each only the block's rows: a stored
member (np.savez) is memory-mapped as an .npy is; a compressed one is decompressed
from its start to the end of the block, keeping only the block; a Fortran-ordered
member is read whole and sliced.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
import os
import struct
import zipfile
from typing import Iterator
from dataclasses import dataclass

import numpy as np

from ._files import NPY_MAGIC, ZIP_MAGIC

__all__ = ["DataFileError", "Cells", "CsvTable", "Samples", "quote", "read_csv", "read_array", "read_arrays",
           "file_kind", "block", "read_training_data", "read_features"]

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
    first_row: int = 0  # arrays: the file's row of row 0 (a block of the file's rows starts there)

    def at(self, row: int, column: int) -> str:
        if self.lines is not None:
            return f"{self.path}:{self.lines[row]}: {self.columns[column]}"
        return (f"{self.path}: {self.array + ' ' if self.array else ''}row {self.first_row + row}, "
                f"{self.columns[column]}")


def _array_columns(indices) -> list[str]:
    return [f"column {i} (from 0)" for i in indices]


# ---- CSV ----------------------------------------------------------------------------------------

@dataclass
class CsvTable:
    """A CSV file's header and rows, as text; ``lines[i]`` is the line where row i starts.
    ``file_rows``: how many data rows the file holds (when ``rows`` are a block of them)."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    file_rows: int | None = None
    first_row: int = 0  # the file's data row (from 0) of rows[0]
    top_row: list[str] | None = None  # the file's first data row, when rows are a block that may not hold it

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
        at = error.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)  # counted after it
        line = data[:at].count(b"\n") + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[at]:02x} at character "
                            f"{column} of the line); save the file as UTF-8") from None


def _blank(row: list[str]) -> bool:
    """Whether a CSV row is a blank line (skipped wherever it stands)."""
    return not row or (len(row) == 1 and not row[0].strip())


def _header_row(path: str, line: int, row: list[str]) -> list[str]:
    """The column names of the header row on ``line``, checked."""
    header = [name.strip() for name in row]
    _check_header(path, line, header)
    return header


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
            if _blank(row):
                continue
            if header is None:
                header = _header_row(path, start, row)
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


def block(n: int, part: tuple[int, int]) -> tuple[int, int]:
    """The rows [start, stop) of ``n`` that process ``rank`` of ``size`` reads
    (``part=(rank, size)``): ⌊n·rank/size⌋ to ⌊n·(rank+1)/size⌋, so the blocks follow
    each other in rank order and differ in size by one row at most."""
    rank, size = part
    return n * rank // size, n * (rank + 1) // size


def _check_part(path: str, n: int, part: tuple[int, int]) -> tuple[int, int]:
    """The block of ``part``; an error when some process would have no row."""
    if n < part[1]:
        raise DataFileError(f"{path}: {n} data row{'s' if n != 1 else ''} for {part[1]} processes; every process "
                            "needs one row or more")
    return block(n, part)


def _text_lines(path: str, text, before: int = 0) -> Iterator[str]:
    """The lines of a CSV file opened as ``text`` (UTF-8, a byte-order mark skipped,
    line ends kept as the csv module wants them: newline=""), after ``before`` lines
    already read, refusing a NUL byte. Read by readline, so that ``text.tell()`` may
    be asked between two lines."""
    number = before
    try:
        while line := text.readline():
            number += 1
            if "\0" in line:
                raise DataFileError(f"{path}:{number}: holds a NUL byte: a binary file, not CSV")
            yield line
    except UnicodeDecodeError:
        raise _where_not_utf8(path) from None


def _where_not_utf8(path: str) -> DataFileError:
    """The error of a file that is not UTF-8, naming its first bad line as read_csv
    does, found by decoding the file line by line (never whole)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            skipped = len(codecs.BOM_UTF8) if number == 1 and line.startswith(codecs.BOM_UTF8) else 0
            try:
                line[skipped:].decode("utf-8")
            except UnicodeDecodeError as error:
                at = skipped + error.start
                return DataFileError(f"{path}:{number}: not UTF-8 text (byte 0x{line[at]:02x} at "
                                     f"character {at + 1} of the line); save the file as UTF-8")
    return DataFileError(f"{path}: not UTF-8 text; save the file as UTF-8")


ROWS_PER_MARK = 4096  # the first pass over a CSV marks where every 4096th data row starts


@dataclass
class _Mark:
    """Where a CSV file's data row ``row`` (from 0) starts: at ``position`` (a text
    file's tell()), on line ``line``, after the header ``header``."""

    row: int
    position: int
    line: int
    header: list[str]


def _scan_csv(path: str, keep: tuple[int, int] | None, mark: _Mark | None = None) -> tuple[CsvTable, list[_Mark]]:
    """One streamed pass over a CSV file. ``keep`` None: the header checked, every
    row's cell count checked, the data rows counted to the file's end and the first
    kept, and a _Mark every ROWS_PER_MARK rows returned. ``keep`` (start, stop): the
    data rows [start, stop) kept, reading from ``mark`` (at or before start; None:
    from the top) and stopping after them."""
    header: list[str] | None = None if mark is None else mark.header
    rows: list[list[str]] = []
    lines: list[int] = []
    marks: list[_Mark] = []
    n, before = (0, 0) if mark is None else (mark.row, mark.line - 1)
    line = before + 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if mark is not None:
                f.seek(mark.position)
            reader = csv.reader(_text_lines(path, f, before), strict=True)
            try:
                for row in reader:
                    start, line = line, before + reader.line_num + 1
                    if _blank(row):
                        continue
                    if header is None:
                        header = _header_row(path, start, row)
                        continue
                    if keep is None:
                        if len(row) != len(header):
                            raise DataFileError(_ragged(path, start, row, header))
                        if not n:
                            rows.append(row)
                    elif n >= keep[0]:
                        if n >= keep[1]:
                            break
                        rows.append(row)
                        lines.append(start)
                    n += 1
                    if keep is None and n % ROWS_PER_MARK == 0:
                        marks.append(_Mark(n, f.tell(), line, header))
            except csv.Error as error:
                raise DataFileError(f"{path}:{before + reader.line_num}: not valid CSV ({error})") from None
    except OSError as error:
        raise _not_found(path, error) from None
    if header is None:
        raise DataFileError(f"{path}:1: empty file, expected a header row naming the columns")
    if not n:
        raise DataFileError(f"{path}:{line}: no data rows after the header")
    return CsvTable(path, header, rows, lines, n), marks


def read_csv_part(path: str, part: tuple[int, int]) -> CsvTable:
    """Process ``rank``'s block of the CSV file's data rows (``part=(rank, size)``,
    see :func:`block`) as :func:`read_csv` reads them, without holding the others:
    a first pass checks the whole file as read_csv does (so every process finds
    the same problems), counts its rows and marks where every ROWS_PER_MARK-th
    starts; a second, from the last mark before the block, keeps the block's rows
    (none when the file has fewer rows than there are processes)."""
    counted, marks = _scan_csv(path, None)
    start, stop = block(counted.file_rows, part)  # read_training_data refuses an empty one
    mark = next((m for m in reversed(marks) if m.row <= start), None)
    table = _scan_csv(path, (start, stop), mark)[0] if stop > start else CsvTable(path, counted.header, [], [])
    if len(table.rows) != stop - start or table.header != counted.header:
        raise DataFileError(f"{path}: changed while it was read")
    table.file_rows, table.first_row, table.top_row = counted.file_rows, start, counted.rows[0]
    return table


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



@contextlib.contextmanager
def _reading_numpy(path: str) -> Iterator[None]:
    """Turns what NumPy and zipfile raise for a file that is not what it should be
    into one-line DataFileErrors naming ``path``."""
    try:
        yield
    except DataFileError:
        raise
    except OSError as error:
        if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise _not_found(path, error) from None
        raise DataFileError(f"{path}: not a NumPy file, or a truncated one ({error})") from None
    except ValueError as error:
        if any(words in str(error) for words in ("allow_pickle", "Object arrays", "Python objects")):
            raise _pickled(path) from None
        raise DataFileError(f"{path}: not a NumPy file, or a truncated one ({error})") from None
    except (EOFError, zipfile.BadZipFile, KeyError) as error:
        raise DataFileError(f"{path}: not a NumPy file, or a truncated or corrupted one "
                            f"({type(error).__name__}: {error})") from None


def _pickled(path: str) -> DataFileError:
    return DataFileError(f"{path}: holds pickled objects; refused (nothing in it was run)")


def _check_magic(path: str, f) -> bytes:
    start = f.read(len(NPY_MAGIC))
    if not start.startswith((NPY_MAGIC, ZIP_MAGIC)):
        # np.load takes anything else for a pickle, and would call it one.
        shown = start[:len(ZIP_MAGIC if file_kind(path) == "npz" else NPY_MAGIC)]
        raise DataFileError(f"{path}: not a NumPy file ("
                            + (f"it starts with {shown!r})" if start else "an empty file)"))
    f.seek(0)
    return start


def _load(path: str, mmap: bool = False):
    """The array of an .npy file (memory-mapped, read-only, with ``mmap``), or every
    array of an .npz file as a dict."""
    with _reading_numpy(path):
        with open(path, "rb") as f:
            _check_magic(path, f)
            loaded = np.load(path if mmap else f, mmap_mode="r" if mmap else None, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded as archive:
                    arrays = {name: archive[name] for name in archive.files}
                for name, value in arrays.items():
                    if not isinstance(value, np.ndarray):  # NpzFile gives a member that is no .npy as bytes
                        raise DataFileError(f"{path}: its member {quote(name)} is not a .npy array")
                return arrays
            return loaded


def read_array(path: str, mmap: bool = False) -> np.ndarray:
    """The single array of an ``.npy`` file (memory-mapped, read-only, with ``mmap``:
    nothing is read until its values are asked for)."""
    loaded = _load(path, mmap)
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


@dataclass
class _Member:
    """An .npz member's .npy header: what it holds, before any of it is read."""

    name: str
    shape: tuple
    fortran_order: bool
    dtype: np.dtype


def _npz_members(path: str, archive: zipfile.ZipFile) -> dict[str, _Member]:
    """The headers of every member of an .npz archive, by array name, reading no values."""
    members = {}
    for entry in archive.namelist():
        if not entry.endswith(".npy"):
            raise DataFileError(f"{path}: its member {quote(entry)} is not a .npy array")
        with archive.open(entry) as stream:
            members[entry[:-4]] = _Member(entry[:-4], *_npy_header(path, stream))
    return members


def _npy_header(path: str, stream) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) from an .npy stream, left at the first value."""
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(stream)
    if dtype.hasobject:
        raise _pickled(path)
    return shape, fortran_order, dtype


def _member_rows(path: str, archive: zipfile.ZipFile, member: _Member, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an .npz member. A stored member (np.savez) is
    memory-mapped and only those rows copied out; a compressed one (np.savez_compressed)
    is decompressed from the start of its values to the end of those rows, keeping
    only them; a Fortran-ordered one, whose rows are not contiguous, is read whole
    and sliced."""
    row_shape = member.shape[1:]
    row_bytes = member.dtype.itemsize * math.prod(row_shape)
    info = archive.getinfo(member.name + ".npy")
    with archive.open(info) as stream:
        if (member.fortran_order and len(member.shape) > 1) or row_bytes == 0:
            return np.lib.format.read_array(stream, allow_pickle=False)[start:stop]
        _npy_header(path, stream)
        values_at = stream.tell()  # from the start of the member's .npy
        stored_at = _stored_at(path, info)
        if stored_at is not None:
            mapped = np.memmap(path, dtype=member.dtype, mode="r", offset=stored_at + values_at + start * row_bytes,
                               shape=(stop - start, *row_shape))
            return np.array(mapped)
        stream.seek(values_at + start * row_bytes)  # forward: zipfile decompresses up to there, holding none of it
        data = stream.read((stop - start) * row_bytes)
    if len(data) != (stop - start) * row_bytes:
        raise DataFileError(f"{path}: its member {quote(member.name)} is truncated")
    return np.frombuffer(data, dtype=member.dtype).reshape((stop - start, *row_shape))


def _stored_at(path: str, info: zipfile.ZipInfo) -> int | None:
    """Where the bytes of an archive member that is stored as it is (not compressed,
    not encrypted) start in the archive's file; None for any other member."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:  # the member's local header: 30 bytes, its name, an extra field
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) != 30 or not local.startswith(ZIP_MAGIC):
        return None
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    return start if start + info.file_size <= os.path.getsize(path) else None


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
    # Read with part=(rank, size): X and y hold rows [first_row, first_row + len(X)) of the
    # file's file_rows; layout (JSON values) says what every process reading the file
    # must see alike (the CSV header; the arrays' shapes and dtypes); y_texts (CSV) holds
    # the target's cells as text when y is numeric, for when another process's are not.
    first_row: int = 0
    file_rows: int | None = None
    layout: list | None = None
    y_texts: np.ndarray | None = None


def read_training_data(path: str, target: str | None, features: list[str] | None,
                       part: tuple[int, int] | None = None) -> Samples:
    """X and y from a CSV (``target`` names the column; ``features`` the feature
    columns, by default every other one), an ``.npy`` (a 2-D array; ``target`` is a
    column index, default the last) or an ``.npz`` (arrays "X" and ``target``,
    default "y"). ``part=(rank, size)``: only the block of rows that process reads
    (:func:`block`; the module docstring tells what is read of the file)."""
    kind = file_kind(path)
    if kind == "csv":
        if part is None:
            return _training_csv(path, target, features)
        table = read_csv_part(path, part)
        samples = _training_table(table, target, features, keep_texts=True)
        _check_part(path, table.file_rows, part)  # after the checks of the header, as one process makes them
        samples.first_row, samples.file_rows, samples.layout = table.first_row, table.file_rows, ["csv", table.header]
        return samples
    if features is not None:
        raise DataFileError(f"{path}: --features names CSV columns; an .{kind} file has none")
    if kind == "npy":
        array = _as_2d(path, read_array(path, mmap=part is not None), "the array")
        if array.shape[1] < 2:
            raise DataFileError(f"{path}: the array has {array.shape[1]} column; expected features and a target")
        index = _column_index(path, target, array.shape[1])
        start, n, layout = 0, array.shape[0], ["npy", list(array.shape), array.dtype.str]
        if part is not None:
            start, stop = _check_part(path, n, part)
            with _reading_numpy(path):
                array = np.array(array[start:stop])  # only these rows are read from the mapped file
        values = _finite_numbers(array, Cells(path, None, _array_columns(range(array.shape[1])), first_row=start))
        features = [i for i in range(array.shape[1]) if i != index]
        samples = Samples(path, values[:, features], values[:, index], None, index,
                          Cells(path, None, _array_columns(features), first_row=start),
                          Cells(path, None, _array_columns([index]), first_row=start))
        if part is not None:
            samples.first_row, samples.file_rows, samples.layout = start, n, layout
        return samples
    if part is not None:
        return _training_npz_part(path, "y" if target is None else target, part)
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


def _training_npz_part(path: str, target: str, part: tuple[int, int]) -> Samples:
    """read_training_data of an .npz with ``part``: its checks, on the members'
    headers first, then only the block's rows of X and the target read."""
    with _reading_numpy(path):
        with open(path, "rb") as f:
            if _check_magic(path, f).startswith(NPY_MAGIC):
                raise DataFileError(f"{path}: a single array (.npy) named .npz; rename it to .npy")
        with zipfile.ZipFile(path) as archive:
            members = _npz_members(path, archive)
            X_member = _member(path, members, "X", " (the features)")
            if len(X_member.shape) not in (1, 2):
                raise DataFileError(f"{path}: X has shape {X_member.shape}, expected (rows, columns)")
            n = X_member.shape[0]
            if n == 0:
                raise DataFileError(f"{path}: X has no rows")
            y_member = _member(path, members, target, " (the target; --target names another)")
            y_shape = y_member.shape[:1] if y_member.shape[1:] == (1,) else y_member.shape
            if len(y_shape) not in (1, 2) or y_shape[0] != n:
                raise DataFileError(f"{path}: {target} has shape {y_shape}, expected ({n},) (one value per row of X)")
            start, stop = _check_part(path, n, part)
            X = _member_rows(path, archive, X_member, start, stop).reshape(stop - start, -1)
            y = _member_rows(path, archive, y_member, start, stop).reshape((stop - start, *y_shape[1:]))
    layout = ["npz", {name: [list(m.shape), m.dtype.str] for name, m in ((("X", X_member), (target, y_member)))}]
    X_cells = Cells(path, None, _array_columns(range(X.shape[1])), "X", start)
    X = _finite_numbers(X, X_cells)
    y_cells = Cells(path, None, _array_columns(range(1 if y.ndim == 1 else y.shape[1])), target, start)
    if y.dtype.kind in "US":
        samples = Samples(path, X, y.astype(str), None, target, X_cells, y_cells,
                          f"{path}: {target} holds text, not numbers")
    else:
        samples = Samples(path, X, _finite_numbers(y.reshape(y.shape[0], -1), y_cells).reshape(y.shape), None, target,
                          X_cells, y_cells)
    samples.first_row, samples.file_rows, samples.layout = start, n, layout
    return samples


def _training_csv(path: str, target: str | None, features: list[str] | None) -> Samples:
    return _training_table(read_csv(path), target, features)


def _training_table(table: CsvTable, target: str | None, features: list[str] | None,
                    keep_texts: bool = False) -> Samples:
    path = table.path
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
        first = table.rows[0] if table.top_row is None else table.top_row
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
                       X_cells, y_cells, y_texts=np.array([cell.strip() for cell in texts], dtype=str)
                       if keep_texts else None)
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

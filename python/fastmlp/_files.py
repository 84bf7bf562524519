"""Writing a file whole or not at all."""

from __future__ import annotations

import os
import secrets
from typing import BinaryIO, Callable

__all__ = ["write_atomically", "NPY_MAGIC", "ZIP_MAGIC"]

NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins
ZIP_MAGIC = b"PK\x03\x04"  # how every zip archive, so every .npz, begins


def write_atomically(path, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write(stream)`` on a temporary file beside ``path``, flushes it to disk
    and renames it over ``path``: ``path`` is then either the old file or the whole
    new one, never half of one, even after a crash. The temporary file is removed if
    ``write`` fails."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 honours the umask, as a plain open() of the final name would.
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:  # named by the file asked for, not the temporary one
        raise type(error)(error.errno, f"cannot write {path}: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.replace(temporary, path)
        except OSError as error:  # a folder in the way, say: named by the file asked for
            raise type(error)(error.errno, f"cannot write {path}: {error.strerror}") from None
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise

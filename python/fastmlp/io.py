"""Saving and loading a network: one documented file format, loaded without unpickling.

A model file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding:

==============  ==========================================================================
``header``      a 0-d unicode array: JSON (below)
``params``      the flat parameter buffer, (n_params,), in the network's dtype
``state``       the state buffer (batch norm's running mean and variance), (n_state,)
``optimizer_0``, ``optimizer_1``
                the optimizer's state buffers (momentum, Adam's moments), (n_params,)
                each, as many as ``header["optimizer"]`` keeps (none without one)
``rng_words``   the generator's four xoshiro256** words, uint64 (4,)
``rng_spare``   its spare normal draw, float64 (1,)
``best_params`` only in a checkpoint of a fit with early stopping that restores the best
                weights (``fit(checkpoint_every=...)``): the parameters of the best epoch so
                far, (n_params,), in the network's dtype
==============  ==========================================================================

The header: ``{"format": "fastmlp.Network", "format_version": 1, "fastmlp_version",
"architecture" (Network.architecture), "dtype", "loss", "huber_delta", "seed",
"classes" (what a classifier's ``predict`` gives: 0..n_outputs-1 for cross_entropy,
[0, 1] (each output's) for binary_cross_entropy; null for a regressor), "n_params",
"n_state", "optimizer" (null, or {"type": "Adam", "lr": ..., its other settings,
"schedule": null or {"type": "Cosine", ...}}), "optimizer_steps", "rng_has_spare",
"metadata" (the network's :attr:`~fastmlp.Network.metadata`, a JSON object; ``{}`` when a
file lacks it)}``.

:func:`save` writes to a temporary file in the target's folder and renames it over the
target, so a crash leaves the old file or the new one, never half of one. :func:`load`
reads with ``allow_pickle=False`` (a file holding a pickled object is refused, and
nothing in it runs), checks every field (the header's keys and types, the format
version, each array's dtype and length against the architecture, finite values) and
raises ValueError naming the file and the field at the first problem. A loaded network
predicts bit for bit as the saved one and trains on exactly as it would have.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

from . import _core
from . import architecture as _arch
from ._files import ZIP_MAGIC, write_atomically
from ._validation import as_float_dtype
from .optimizers import SGD, Adam, AdamW, LAMB, Optimizer
from .schedules import Constant, Cosine, Exponential, Schedule, StepDecay, Warmup

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastmlp.Network"
FORMAT_VERSION = 1
_HEADER_TYPES = {
    "format": str, "format_version": int, "fastmlp_version": str, "architecture": list, "dtype": str,
    "loss": str, "huber_delta": (int, float), "seed": int, "classes": (list, type(None)), "n_params": int,
    "n_state": int, "optimizer": (dict, type(None)), "optimizer_steps": int, "rng_has_spare": bool,
    "metadata": dict,
}
_OPTIONAL = {"metadata": {}}  # keys a file may lack (written since), and their value then
_MAX_HEADER_BYTES = 1 << 26  # the JSON header's .npy member: 64 MiB (architecture and metadata)
_NPY_HEADER_BYTES = 4096  # what an array's .npy member may hold beside its values
_OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW, LAMB)}
_SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, Exponential, Cosine, Warmup)}
_SCHEDULE_FIELDS = {"Constant": (), "StepDecay": ("step_size", "gamma"), "Exponential": ("gamma",),
                    "Cosine": ("total_steps", "min_factor"), "Warmup": ("steps", "schedule")}


# ---- optimizers and schedules as plain data ----------------------------------------------------

def _schedule_to_dict(schedule: Schedule | None):
    if schedule is None:
        return None
    spec = {"type": type(schedule).__name__}
    for field in _SCHEDULE_FIELDS[spec["type"]]:
        value = getattr(schedule, field)
        spec[field] = _schedule_to_dict(value) if isinstance(value, Schedule) else value
    return spec


def _schedule_from_dict(spec, where: str):
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") not in _SCHEDULES:
        raise ValueError(f"{where}: expected null or a schedule such as {{'type': 'Cosine', ...}}, got {spec!r:.200}")
    kind = spec["type"]
    fields = {key: value for key, value in spec.items() if key != "type"}
    if set(fields) != set(_SCHEDULE_FIELDS[kind]):
        raise ValueError(f"{where}: a {kind} schedule has the fields {list(_SCHEDULE_FIELDS[kind])}, "
                         f"got {sorted(fields)}")
    if kind == "Warmup":
        fields["schedule"] = _schedule_from_dict(fields["schedule"], f"{where} schedule")
    try:
        return _SCHEDULES[kind](**fields)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: not a valid {kind} schedule: {error}") from None


def _optimizer_to_dict(optimizer: Optimizer) -> dict:
    spec = {"type": type(optimizer).__name__, "lr": optimizer.lr}
    if isinstance(optimizer, SGD):
        spec.update(momentum=optimizer.momentum, dampening=optimizer.dampening, nesterov=optimizer.nesterov,
                    weight_decay=optimizer.weight_decay)
    else:
        spec.update(betas=list(optimizer.betas), eps=optimizer.eps, weight_decay=optimizer.weight_decay)
    spec.update(schedule=_schedule_to_dict(optimizer.schedule), clip_norm=optimizer.clip_norm,
                clip_value=optimizer.clip_value)
    return spec


def _optimizer_from_dict(spec: dict, where: str) -> Optimizer:
    if spec.get("type") not in _OPTIMIZERS:
        raise ValueError(f"{where} type: expected one of {', '.join(_OPTIMIZERS)}, got {spec.get('type')!r:.100}")
    fields = {key: value for key, value in spec.items() if key != "type"}
    fields["schedule"] = _schedule_from_dict(fields.get("schedule"), f"{where} schedule")
    try:
        return _OPTIMIZERS[spec["type"]](**fields)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: not a valid {spec['type']}: {error}") from None


# ---- save ----------------------------------------------------------------------------------------

def _classes(net) -> list | None:
    """The header's "classes": the labels the network's ``predict`` gives."""
    if net.loss == "cross_entropy":
        return list(range(net.n_outputs))
    return [0, 1] if net.loss == "binary_cross_entropy" else None


def save(net, path, *, best_params: np.ndarray | None = None) -> None:
    """Writes ``net`` to ``path`` (see the module docstring), atomically; with
    ``best_params`` (a checkpoint's), that member too."""
    from .network import _check_metadata

    path = os.fspath(path)
    params, (optimizer, kind, steps, buffers), (words, has_spare, spare), state = net._snapshot()
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fastmlp_version": _core.__version__,
        "architecture": net.architecture, "dtype": net.dtype.name, "loss": net.loss, "huber_delta": net.huber_delta,
        "seed": net.seed, "classes": _classes(net),
        "n_params": int(params.size), "n_state": int(state.size),
        "optimizer": None if optimizer is None else _optimizer_to_dict(optimizer),
        "optimizer_steps": int(steps), "rng_has_spare": bool(has_spare),
        "metadata": _check_metadata(net.metadata),
    }
    arrays = {"header": np.array(json.dumps(header)), "params": params, "state": state,
              "rng_words": np.array(words, dtype=np.uint64), "rng_spare": np.array([spare], dtype=np.float64)}
    for i, buffer in enumerate(buffers):
        arrays[f"optimizer_{i}"] = buffer
    if best_params is not None:
        arrays["best_params"] = best_params
    write_atomically(path, lambda stream: np.savez(stream, **arrays))


# ---- load ----------------------------------------------------------------------------------------

class _Pickled(ValueError):
    """A member that holds pickled objects (an object array)."""


class _Archive:
    """A model file's members, each read only when asked for, and only when the size
    its zip entry declares is within what the header allows: a crafted file cannot
    make :func:`load` decompress or allocate more than the model it describes. Every
    failure is a ValueError naming the file (FileNotFoundError stays itself)."""

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "rb")
        try:
            start = self._file.read(len(ZIP_MAGIC))
            if start != ZIP_MAGIC:  # np.load would take anything that is no .npy or .npz for a pickle
                what = "an empty file" if not start else f"it starts with {start!r}"
                raise ValueError(f"{path}: not a fastmlp model file (not an .npz archive: {what})")
            self._zip = self._guard(lambda: zipfile.ZipFile(self._file))
            self.members = {}
            for info in self._zip.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{path}: not a fastmlp model file (its member {info.filename!r} is not "
                                     f"a .npy array)")
                if info.filename[:-4] in self.members:  # readers could pick either copy
                    raise ValueError(f"{path}: not a fastmlp model file (its member {info.filename!r} appears "
                                     f"twice)")
                self.members[info.filename[:-4]] = info
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "_Archive":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def _guard(self, read):
        try:
            return read()
        except _Pickled:
            raise ValueError(f"{self.path}: holds a pickled object; refused (fastmlp never unpickles a "
                             f"model file)") from None
        except ValueError as error:
            raise ValueError(f"{self.path}: not a fastmlp model file ({error})") from None
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError) as error:
            raise ValueError(f"{self.path}: not a fastmlp model file, or a truncated or corrupted one "
                             f"({type(error).__name__}: {error})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, max_bytes: int) -> np.ndarray | None:
        """Member ``name`` (None when absent), refused unread when its zip entry, or the
        shape and dtype its .npy header declares, come to more than ``max_bytes``."""
        info = self.members.get(name)
        if info is None:
            return None
        declared = self._guard(lambda: self._declared_bytes(info))
        size = max(info.file_size, declared)
        if size > max_bytes:
            raise ValueError(f"{self.path}: {name}: {size} bytes, more than the {max_bytes} the header allows it")

        def read():
            with self._zip.open(info) as stream:
                return np.lib.format.read_array(stream, allow_pickle=False)

        return self._guard(read)

    def _declared_bytes(self, info) -> int:
        """What the member's .npy header says its values take (read_array would allocate
        that much before reading them)."""
        with self._zip.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            # Versions 2 and 3 share the header's layout (3 allows UTF-8 field names).
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(stream)
        if dtype.hasobject:  # np.save pickled it: refused before read_array sees it
            raise _Pickled(info.filename)
        return math.prod(shape) * dtype.itemsize


def _header(path: str, archive: _Archive) -> dict:
    raw = archive.read("header", _MAX_HEADER_BYTES)
    if raw is None or raw.dtype.kind != "U" or raw.shape != ():
        raise ValueError(f"{path}: not a fastmlp model file (no JSON header)")
    try:
        header = json.loads(str(raw))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: header: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{path}: header: nested too deeply") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: header: not a {FORMAT} file (format {header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: header format_version: expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: written in format version {version} (by fastmlp "
                         f"{header.get('fastmlp_version')}); this fastmlp {_core.__version__} reads up to "
                         f"version {FORMAT_VERSION}: upgrade fastmlp")
    for key, value in _OPTIONAL.items():
        header.setdefault(key, value)
    missing = sorted(set(_HEADER_TYPES) - set(header))
    if missing:
        raise ValueError(f"{path}: header: missing {missing}")
    unknown = sorted(set(header) - set(_HEADER_TYPES))
    if unknown:
        raise ValueError(f"{path}: header: unknown keys {unknown}")
    for key, kinds in _HEADER_TYPES.items():
        value = header[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds in (int, (int, float))):
            raise ValueError(f"{path}: header {key}: expected {_type_names(kinds)}, got {value!r:.200}")
    return header


def _type_names(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join("null" if k is type(None) else {"dict": "an object", "list": "a list"}.get(k.__name__, k.__name__)
                       for k in kinds)


def _array(path: str, archive: _Archive, name: str, dtype, length: int) -> np.ndarray:
    dtype = np.dtype(dtype)
    value = archive.read(name, length * dtype.itemsize + _NPY_HEADER_BYTES)
    if value is None:
        raise ValueError(f"{path}: {name}: missing")
    if value.dtype.kind == dtype.kind and value.dtype.itemsize == dtype.itemsize and value.dtype != dtype:
        value = value.astype(dtype)  # the other byte order: a file from a big-endian machine
    if value.dtype != dtype or value.shape != (length,):
        raise ValueError(f"{path}: {name}: expected {np.dtype(dtype).name} of shape ({length},), "
                         f"got {value.dtype.name} of shape {value.shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError(f"{path}: {name}: holds {int((~np.isfinite(value)).sum())} NaN or infinite values")
    return value


def load(path):
    """The network saved in ``path`` by :meth:`fastmlp.Network.save` (see the module docstring)."""
    return _load(path)[0]


def _load(path):
    """(the network in ``path``, its ``best_params`` member or None)."""
    from .network import Network, _check_state, resolve_init

    path = os.fspath(path)
    with _Archive(path) as archive:
        header = _header(path, archive)
        # The sizes the architecture implies, checked against the header before anything
        # is read or allocated for them.
        try:
            dtype = as_float_dtype(header["dtype"], "dtype")
            n_params, n_state = _arch.sizes(_arch.flatten(_arch.normalize(header["architecture"], resolve_init)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: header: {error}") from None
        if header["dtype"] != dtype.name:
            raise ValueError(f"{path}: header dtype: expected 'float32' or 'float64', got {header['dtype']!r}")
        for key, actual in (("n_params", n_params), ("n_state", n_state)):
            if header[key] != actual:
                raise ValueError(f"{path}: header {key}: the architecture has {actual}, the header says "
                                 f"{header[key]}")
        params = _array(path, archive, "params", dtype, n_params)
        state = _array(path, archive, "state", dtype, n_state)
        optimizer, kind, buffers = None, "sgd", []
        if header["optimizer"] is not None:
            optimizer = _optimizer_from_dict(header["optimizer"], f"{path}: header optimizer")
            kind = optimizer._kind
            # Buffers exist once the optimizer has stepped (or a saved one had them).
            kept = header["optimizer_steps"] > 0 or "optimizer_0" in archive
            buffers = [_array(path, archive, f"optimizer_{i}", dtype, n_params)
                       for i in range(optimizer._config().state_buffers if kept else 0)]
        best = _array(path, archive, "best_params", dtype, n_params) if "best_params" in archive else None
        expected = ({"header", "params", "state", "rng_words", "rng_spare"}
                    | {f"optimizer_{i}" for i in range(len(buffers))} | ({"best_params"} if best is not None else set()))
        unknown = sorted(set(archive.members) - expected)
        if unknown:
            raise ValueError(f"{path}: holds arrays this format does not have: {unknown}")
        words = _array(path, archive, "rng_words", np.uint64, 4)
        spare = _array(path, archive, "rng_spare", np.float64, 1)
    try:
        net = Network.from_architecture(header["architecture"], loss=header["loss"], huber_delta=header["huber_delta"],
                                        dtype=dtype, seed=header["seed"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: header: {error}") from None
    classes = _classes(net)
    if header["classes"] != classes:
        raise ValueError(f"{path}: header classes: a {header['loss']} network of {net.n_outputs} outputs has "
                         f"classes {classes}, got {header['classes']!r:.200}")
    rng = (tuple(int(w) for w in words), header["rng_has_spare"], float(spare[0]))
    try:
        net._restore(_check_state(net, params, (optimizer, kind, header["optimizer_steps"], buffers), rng, state))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    try:
        net.metadata = header["metadata"]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: header {error}") from None
    return net, best

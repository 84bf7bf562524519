"""Save and load (issue 12, item 1): fastmlp's model file, read without unpickling."""

from __future__ import annotations

import copy
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import fastmlp as fm

ARCHITECTURES = {
    "plain": ([3, 8, 2], dict(activation="tanh")),
    "residual-layer-norm-dropout": ([3, 8, 8, 8, 2], dict(activation="gelu", residual=True, norm="layer", dropout=0.2)),
    "batch-norm": ([3, 8, 8, 2], dict(activation="swish", norm="batch")),
    "classifier": ([3, 8, 8, 4], dict(activation="relu", residual=True, norm="batch", loss="cross_entropy")),
    "binary": ([3, 8, 1], dict(activation="sigmoid", loss="binary_cross_entropy")),
}
OPTIMIZERS = [
    fm.SGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4, clip_norm=5.0),
    fm.Adam(lr=1e-3, schedule=fm.Warmup(3, fm.Cosine(50, min_factor=0.1))),
    fm.AdamW(lr=1e-3, betas=(0.8, 0.99), clip_value=1.0, schedule=fm.StepDecay(4, 0.5)),
    fm.LAMB(lr=1e-3, schedule=fm.Exponential(0.99)),
]


def trained(name, dtype="float32", optimizer=None, epochs=3):
    sizes, kwargs = ARCHITECTURES[name]
    net = fm.Network(sizes, dtype=dtype, seed=5, **kwargs)
    X, y = data(net)
    net.fit(X, y, epochs=epochs, batch_size=16, optimizer=optimizer or fm.Adam(lr=1e-2))
    return net


def data(net, n=64):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, net.n_inputs)).astype(net.dtype)
    if net.loss == "cross_entropy":
        return X, rng.integers(0, net.n_outputs, n)
    if net.loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (n, net.n_outputs)).astype(net.dtype)
    return X, rng.standard_normal((n, net.n_outputs)).astype(net.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_a_loaded_network_predicts_bit_identically(name, dtype, tmp_path):
    net = trained(name, dtype)
    net.save(tmp_path / "model.npz")
    loaded = fm.load(tmp_path / "model.npz")
    X, _ = data(net)
    assert loaded.architecture == net.architecture and loaded.dtype == net.dtype and loaded.loss == net.loss
    np.testing.assert_array_equal(loaded.params, net.params)
    np.testing.assert_array_equal(loaded.state, net.state)
    np.testing.assert_array_equal(loaded.decision_function(X), net.decision_function(X))


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("name", ["residual-layer-norm-dropout", "classifier"])
def test_fit_save_load_fit_is_one_fit(name, optimizer, tmp_path):
    whole = trained(name, optimizer=copy.deepcopy(optimizer), epochs=5)
    part = trained(name, optimizer=copy.deepcopy(optimizer), epochs=3)
    part.save(tmp_path / "part.npz")
    resumed = fm.load(tmp_path / "part.npz")
    assert repr(resumed.optimizer) == repr(optimizer)
    X, y = data(resumed)
    resumed.fit(X, y, epochs=2, batch_size=16)  # the saved optimizer, its state, the generator's position
    np.testing.assert_array_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.state, whole.state)


def test_an_untrained_network_round_trips(tmp_path):
    net = fm.Network([2, 3, 1], seed=1)
    net.save(tmp_path / "m.npz")
    loaded = fm.load(tmp_path / "m.npz")
    assert loaded.optimizer is None and loaded.seed == 1
    np.testing.assert_array_equal(loaded.params, net.params)


def test_pickle_and_deepcopy_round_trip():
    net = trained("classifier")
    X, _ = data(net)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone.params, net.params)
        np.testing.assert_array_equal(clone.state, net.state)
        np.testing.assert_array_equal(clone.predict_proba(X), net.predict_proba(X))


def test_save_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.npz"
    trained("plain").save(path)
    other = trained("batch-norm")
    other.save(path)
    assert fm.load(path).architecture == other.architecture
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it


# ---- files that are not (right) -------------------------------------------------------------------


def arrays_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def edited_header(path, edit):
    arrays = arrays_of(path)
    header = json.loads(str(arrays["header"]))
    edit(header)
    arrays["header"] = np.array(json.dumps(header))
    write(path, arrays)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.npz"
    trained("classifier", optimizer=fm.Adam(lr=1e-3)).save(path)
    return path


def test_a_truncated_file_is_refused(saved):
    blob = saved.read_bytes()
    for keep in (len(blob) // 2, 100, 0):
        saved.write_bytes(blob[:keep])
        with pytest.raises(ValueError, match=r"model\.npz: not a fastmlp model file"):
            fm.load(saved)


def test_a_corrupted_file_is_refused(saved):
    blob = bytearray(saved.read_bytes())
    middle = len(blob) // 2
    blob[middle:middle + 64] = bytes(64)
    saved.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"model\.npz: "):
        fm.load(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(format_version=2), r"format version 2 .* reads up to version 1: upgrade fastmlp"),
    (lambda h: h.update(format="something.else"), r"header: not a fastmlp\.Network file"),
    (lambda h: h.pop("loss"), r"header: missing \['loss'\]"),
    (lambda h: h.update(extra=1), r"header: unknown keys \['extra'\]"),
    (lambda h: h.update(seed="7"), r"header seed: expected int"),
    (lambda h: h.update(dtype="float16"), r"header: dtype: expected 'float32' or 'float64'"),
    (lambda h: h["architecture"][0].update(outputs=9), r"header: architecture\[1\]"),
    (lambda h: h["architecture"].pop(), r"header"),
    (lambda h: h.update(classes=["a", "b"]), r"header classes"),
    (lambda h: h.update(optimizer={"type": "Adagrad", "lr": 0.1}), r"header optimizer type: expected one of"),
    (lambda h: h["optimizer"].update(lr=-1.0), r"header optimizer: not a valid Adam: lr"),
    (lambda h: h.update(optimizer=None, optimizer_steps=0), r"holds arrays this format does not have"),
    (lambda h: h.update(metadata=[1]), r"header metadata: expected an object"),
])
def test_an_edited_header_is_refused_naming_the_field(saved, edit, message):
    edited_header(saved, edit)
    with pytest.raises(ValueError, match=message):
        fm.load(saved)


@pytest.mark.parametrize("name, value, message", [
    ("params", lambda a: a[:-1], r"params: expected float32 of shape"),
    ("params", lambda a: a.astype(np.float64), r"params: expected float32"),
    ("params", lambda a: np.where(np.arange(a.size) == 3, np.nan, a).astype(a.dtype), r"params: holds 1 NaN"),
    ("state", lambda a: np.full_like(a, np.inf), r"state: holds .* NaN or infinite"),
    ("optimizer_1", lambda a: a[:5], r"optimizer_1: expected"),
    ("rng_words", lambda a: np.zeros(4, np.uint64), r"rng_state words: all four are zero"),
    ("rng_words", lambda a: a.astype(np.int64), r"rng_words: expected uint64"),
])
def test_an_edited_array_is_refused_naming_it(saved, name, value, message):
    arrays = arrays_of(saved)
    arrays[name] = value(arrays[name])
    write(saved, arrays)
    with pytest.raises(ValueError, match=message):
        fm.load(saved)


def test_a_pickled_object_is_refused_without_running_it(saved, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arrays = arrays_of(saved)
    arrays["params"] = np.array([Payload()], dtype=object)
    with open(saved, "wb") as f:
        np.savez(f, **arrays)  # an object array: np.save pickles it
    with pytest.raises(ValueError, match=r"holds a pickled object; refused"):
        fm.load(saved)
    assert not marker.exists()


def test_other_files_are_refused(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"plain\.npy: not a fastmlp model file"):
        fm.load(tmp_path / "plain.npy")
    write(tmp_path / "other.npz", {"x": np.zeros(3)})
    with pytest.raises(ValueError, match=r"other\.npz: not a fastmlp model file \(no JSON header\)"):
        fm.load(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("header.npy", b"not an npy")
    with pytest.raises(ValueError, match=r"zip\.npz: not a fastmlp model file"):
        fm.load(tmp_path / "zip.npz")
    with pytest.raises(FileNotFoundError):
        fm.load(tmp_path / "missing.npz")
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=r"data\.csv: not a fastmlp model file \(not an \.npz archive: it starts "
                                         r"with b'x,y\\n'\)"):
        fm.load(tmp_path / "data.csv")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npz: not a fastmlp model file \(not an \.npz archive: an empty"):
        fm.load(tmp_path / "empty.npz")


def test_a_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "model.npz").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match=r"model\.npz: not a fastmlp model file \(not an \.npz archive"):
        fm.load(tmp_path / "model.npz")
    assert not marker.exists()


class _Payload:
    """Unpickling it creates the file ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---- metadata ------------------------------------------------------------------------------------


NOTES = {"features": ["age", "height"], "scale": [1.5, 2.0], "task": "regression", "nested": {"ok": True, "none": None}}


def test_metadata_travels_with_the_network(tmp_path):
    net = trained("plain")
    assert net.metadata == {}
    net.metadata = NOTES
    net.save(tmp_path / "model.npz")
    copies = [fm.load(tmp_path / "model.npz"), pickle.loads(pickle.dumps(net)), copy.deepcopy(net), net.copy(),
              net.astype("float64")]
    for other in copies:
        assert other.metadata == NOTES
    copies[0].metadata["task"] = "changed"  # each copy owns its dict
    assert net.metadata["task"] == "regression" and NOTES["task"] == "regression"


def test_a_file_without_metadata_loads_with_none(saved):
    edited_header(saved, lambda h: h.pop("metadata"))  # as written before metadata existed
    assert fm.load(saved).metadata == {}


@pytest.mark.parametrize("value, error, message", [
    ([("a", 1)], TypeError, r"^metadata: expected a dict of JSON values, got list"),
    ({1: "a"}, ValueError, r"^metadata: must hold only str keys and JSON values; tuples"),
    ({"a": (1, 2)}, ValueError, r"^metadata: must hold only str keys and JSON values; tuples"),
    ({"a": float("nan")}, ValueError, r"^metadata: must hold only str keys .*Out of range float"),
    ({"a": np.arange(3)}, ValueError, r"^metadata: must hold only str keys .*ndarray is not JSON serializable"),
])
def test_metadata_that_json_cannot_hold_is_refused(value, error, message, tmp_path):
    net = trained("plain")
    with pytest.raises(error, match=message):
        net.metadata = value
    assert net.metadata == {}
    net.metadata["later"] = object()  # changed in place: caught when saved, and nothing is written
    with pytest.raises(ValueError, match=r"^metadata: must hold only str keys .*object is not JSON serializable"):
        net.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


# ---- crafted files: refused before anything is allocated for them ------------------------------


def test_a_header_claiming_a_huge_network_is_refused_before_building_it(saved):
    # 10**12 outputs: building it would ask for terabytes (MemoryError); the header's count does not match.
    edited_header(saved, lambda h: h["architecture"][-1].update(outputs=10**12))
    with pytest.raises(ValueError, match=r"model\.npz: header n_params: the architecture has \d{13,}, the header says"):
        fm.load(saved)


def test_a_consistent_huge_header_with_small_arrays_is_refused_before_building(saved):
    def grow(h):
        h["architecture"][-1]["outputs"] = 10**9
        h["classes"] = None
        h["loss"] = "mse"
        h["n_params"] = 10**9 * (h["architecture"][-1]["inputs"] + 1) + h["n_params"]
    edited_header(saved, grow)
    with pytest.raises(ValueError, match=r"n_params|params: expected float32 of shape"):
        fm.load(saved)


def test_a_member_larger_than_its_array_is_refused_unread(saved):
    arrays = arrays_of(saved)
    arrays["rng_spare"] = np.zeros(100_000)  # 800 kB where 8 bytes belong
    write(saved, arrays)
    with pytest.raises(ValueError, match=r"rng_spare: \d+ bytes, more than the \d+ the header allows it"):
        fm.load(saved)


def test_a_deeply_nested_header_is_refused(saved):
    arrays = arrays_of(saved)
    header = str(arrays["header"])
    arrays["header"] = np.array(header[:-1] + ', "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write(saved, arrays)
    with pytest.raises(ValueError, match=r"model\.npz: header: nested too deeply"):
        fm.load(saved)


def test_arrays_of_the_other_byte_order_load(saved):
    """A model written on a big-endian machine: the same values, the other byte order."""
    net = fm.load(saved)
    arrays = arrays_of(saved)
    for name, value in arrays.items():
        if value.dtype.kind in "fu":
            arrays[name] = value.astype(value.dtype.newbyteorder())
    write(saved, arrays)
    swapped = fm.load(saved)
    assert np.array_equal(swapped.params, net.params)
    X = np.random.default_rng(0).standard_normal((5, net.n_inputs))
    assert np.array_equal(swapped.predict(X), net.predict(X))


def test_a_member_that_is_not_an_array_is_refused(saved):
    with zipfile.ZipFile(saved, "a") as z:
        z.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match=r"model\.npz: not a fastmlp model file \(its member 'notes\.txt' is not"):
        fm.load(saved)


def test_a_file_that_cannot_be_written_is_named_not_its_temporary(tmp_path):
    target = tmp_path / "missing-folder" / "model.npz"
    with pytest.raises(FileNotFoundError, match=rf"^\[Errno 2\] cannot write {target}: No such file"):
        trained("plain").save(target)


def test_an_npy_header_claiming_a_huge_array_is_refused_before_allocating(saved):
    """The zip entry is small, but the member's own .npy header says 10**12 values:
    read_array would allocate terabytes before reading a byte."""
    import io as io_module

    with zipfile.ZipFile(saved, "r") as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    lying = io_module.BytesIO()
    np.lib.format.write_array_header_1_0(lying, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    members["params.npy"] = lying.getvalue() + bytes(16)
    with zipfile.ZipFile(saved, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=r"model\.npz: params: 4000000000000 bytes, more than the \d+ the header"):
        fm.load(saved)


def test_a_member_twice_is_refused(saved):
    import warnings

    with zipfile.ZipFile(saved, "a") as z:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
            z.writestr("params.npy", b"")
    with pytest.raises(ValueError, match=r"model\.npz: not a fastmlp model file \(its member 'params\.npy' appears twice"):
        fm.load(saved)


@pytest.mark.parametrize("schedule, message", [
    ({"type": "Cosine", "total_steps": "x", "min_factor": 0}, r"not a valid Cosine schedule: total_steps"),
    ({"type": "Cosine", "total_steps": -1, "min_factor": 0}, r"not a valid Cosine schedule"),
    ({"type": "Warmup", "steps": 2, "schedule": {"type": "Warmup", "steps": 2, "schedule": None}},
     r"not a valid Warmup schedule"),
])
def test_a_bad_schedule_in_the_header_is_named(saved, schedule, message):
    edited_header(saved, lambda h: h["optimizer"].update(schedule=schedule))
    with pytest.raises(ValueError, match=rf"model\.npz: header optimizer schedule.*{message}"):
        fm.load(saved)

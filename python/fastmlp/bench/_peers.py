"""The implementations ``fastmlp bench`` compares, and how to tell which of them this machine has.

Detection does not import a peer (importing PyTorch takes seconds): it asks the import system
whether the module can be found and the installed distribution its version. The worker that
runs a peer imports it for real; a peer that is found but fails to import there is reported
with the error, as a missing one is reported with how to install it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    key: str  # --peers spelling
    label: str  # the table's
    module: str  # what must import
    distribution: str | None  # whose version is reported (None: part of fastmlp or NumPy)
    groups: tuple[str, ...]  # which configuration groups it runs: train, predict, gemm
    hint: str  # how to install it
    uses_numpy_blas: bool = False  # its process runs with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset


FASTMLP = Peer("fastmlp", "fastmlp", "fastmlp", "fastmlp", ("train", "predict", "gemm"), "")
PEERS = (
    FASTMLP,
    Peer("torch", "PyTorch", "torch", "torch", ("train", "predict", "gemm"),
         'pip install torch --index-url https://download.pytorch.org/whl/cpu   (the CPU build; plain '
         '"pip install torch" takes a CUDA build of several GB)'),
    Peer("sklearn", "scikit-learn", "sklearn", "scikit-learn", ("train", "predict"),
         "pip install scikit-learn threadpoolctl   (what fastmlp's bench extra adds)", uses_numpy_blas=True),
    Peer("reference", "NumPy reference", "fastmlp.reference", None, ("train", "predict"),
         "comes with fastmlp (fastmlp.reference)", uses_numpy_blas=True),
    Peer("numpy", "NumPy BLAS", "numpy", "numpy", ("gemm",), "pip install numpy", uses_numpy_blas=True),
)
PEER_KEYS = tuple(p.key for p in PEERS)
_SPELLINGS = {**{p.key: p.key for p in PEERS}, **{p.label.lower(): p.key for p in PEERS},
              "pytorch": "torch", "scikit-learn": "sklearn", "numpy-reference": "reference",
              "fastmlp.reference": "reference", "numpy-blas": "numpy", "blas": "numpy"}


def peer(key: str) -> Peer:
    for p in PEERS:
        if p.key == key:
            return p
    raise KeyError(key)


def parse_peers(text: str) -> list[str]:
    """"torch,scikit-learn" → ["torch", "sklearn"]: the peers' keys, fastmlp left out (it always
    runs); "none" → [] (fastmlp alone)."""
    if text.strip().lower() == "none":
        return []
    keys = []
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word not in _SPELLINGS:
            raise ValueError(f"--peers: unknown peer {word!r}; expected some of {', '.join(PEER_KEYS[1:])}, or none")
        key = _SPELLINGS[word]
        if key != "fastmlp" and key not in keys:
            keys.append(key)
    return keys


@dataclass(frozen=True)
class Detection:
    peer: Peer
    available: bool
    version: str | None
    reason: str = ""  # why not available

    @property
    def line(self) -> str:
        """One line for the header: the version, or why it is missing and how to install it."""
        if self.available:
            return f"{self.peer.label} {self.version or ''}".rstrip()
        return f"{self.peer.label}: {self.reason}; to compare with it: {self.peer.hint}"


def detect(p: Peer, find_spec=importlib.util.find_spec, version=importlib.metadata.version) -> Detection:
    """Whether ``p`` can be imported here (its module can be found) and its version, without
    importing it. ``find_spec`` and ``version`` are parameters for the tests."""
    try:
        found = find_spec(p.module) is not None
    except (ImportError, ValueError) as error:  # a parent package that fails to import
        return Detection(p, False, None, f"not importable ({error})")
    if not found:
        return Detection(p, False, None, "not installed")
    if p.distribution is None:
        return Detection(p, True, None)
    try:
        return Detection(p, True, version(p.distribution))
    except importlib.metadata.PackageNotFoundError:
        return Detection(p, True, None)  # importable from a source tree, say: no metadata


def detect_all(keys: list[str] | None = None, **probes) -> list[Detection]:
    """Detections of fastmlp and the peers named (default: every peer), in the table's order."""
    wanted = set(PEER_KEYS if keys is None else ["fastmlp", *keys])
    return [detect(p, **probes) for p in PEERS if p.key in wanted]

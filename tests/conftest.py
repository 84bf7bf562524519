"""Shared fixtures for fastmlp's tests, and the skip of the GPU tests (marker ``cuda``) without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The tests import their shared helpers (kernel_helpers.py) from this folder: with
# --import-mode=importlib it is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastmlp as fm
from fastmlp import _core


def gpu_missing() -> str | None:
    """Why the tests marked ``cuda`` cannot run here; None when a GPU can be used."""
    info = _core.cuda_info()
    if not info["built"]:
        return "fastmlp was built without CUDA (FASTMLP_CUDA=ON)"
    if info["error"] or not info["devices"]:
        return info["error"] or "no usable GPU: the CUDA runtime sees no device"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` (the marker is registered in pyproject.toml) are skipped,
    with the reason, where no GPU can be used."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    reason = gpu_missing() if marked else None
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"cuda: {reason}"))


@pytest.fixture
def restore_num_threads():
    """Lets a test change fastmlp's thread count; puts the old count back afterwards."""
    saved = fm.get_num_threads()
    yield saved
    fm.set_num_threads(saved)

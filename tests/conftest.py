"""Shared fixtures for fastmlp's tests."""

import sys
from pathlib import Path

import pytest

# The tests import their shared helpers (kernel_helpers.py) from this folder: with
# --import-mode=importlib it is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastmlp as fm


@pytest.fixture
def restore_num_threads():
    """Lets a test change fastmlp's thread count; puts the old count back afterwards."""
    saved = fm.get_num_threads()
    yield saved
    fm.set_num_threads(saved)

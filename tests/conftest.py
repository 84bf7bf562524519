"""Shared fixtures for fastmlp's tests."""

import pytest

import fastmlp as fm


@pytest.fixture
def restore_num_threads():
    """Lets a test change fastmlp's thread count; puts the old count back afterwards."""
    saved = fm.get_num_threads()
    yield saved
    fm.set_num_threads(saved)

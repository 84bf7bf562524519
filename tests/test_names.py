"""The reference's own copies of the engine's name tables, held equal to the engine's.

Each enum's names live in one C++ table, which _core exposes as a tuple in enum order
(``_core.ACTIVATIONS``, ``LOSSES``, ``OPTIMIZERS``, ``SCHEDULES``, ``INIT_SCHEMES``).
fastmlp.reference keeps its own spelling of each on purpose (an oracle that reads the
engine's names could not catch a wrong one); these tests keep the two from drifting
apart: same names, same order.
"""

from __future__ import annotations

import pytest

import fastmlp.network
from fastmlp import _core, reference

# (the engine's table in _core, the reference's copy)
TABLES = [
    ("ACTIVATIONS", "ACTIVATIONS"),
    ("LOSSES", "LOSSES"),
    ("OPTIMIZERS", "OPTIMIZERS"),
    ("SCHEDULES", "SCHEDULE_KINDS"),
    ("INIT_SCHEMES", "INIT_SCHEMES"),
    ("LAYER_TYPES", "LAYER_TYPES"),
]

# A build from before _core exposed its tables has none of them; one that has any must have all.
needs_tables = pytest.mark.skipif(not hasattr(_core, "ACTIVATIONS"), reason="this _core predates its name tables")


@needs_tables
@pytest.mark.parametrize("core_name, reference_name", TABLES)
def test_reference_copy_equals_the_engines_table(core_name, reference_name):
    engine = getattr(_core, core_name)
    copy = getattr(reference, reference_name)
    assert isinstance(engine, tuple) and all(isinstance(name, str) for name in engine), engine
    assert copy == engine, f"reference.{reference_name} {copy} != _core.{core_name} {engine}"


@pytest.mark.parametrize("name", ["ACTIVATIONS", "LOSSES", "INIT_SCHEMES"])
def test_reference_copy_equals_the_python_apis(name):
    assert getattr(reference, name) == getattr(fastmlp.network, name)


@pytest.mark.parametrize("_, reference_name", TABLES)
def test_reference_copies_are_tuples_of_distinct_names(_, reference_name):
    copy = getattr(reference, reference_name)
    assert isinstance(copy, tuple) and copy and all(isinstance(name, str) for name in copy)
    assert len(set(copy)) == len(copy), f"reference.{reference_name} repeats a name: {copy}"

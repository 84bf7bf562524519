"""Fuzzing: every public kernel, Network's methods and set_num_threads driven by hypothesis with random
shapes, layouts, dtypes, overlaps, read-only flags and extreme values (tests/fuzz_driver.py).
Each call must either raise a ValueError/TypeError naming an argument or equal its NumPy
twin in fastmlp.reference; never crash, never hang.

Each target runs in its own subprocess with a timeout, so a segfault or a deadlock fails
that target's test (with the case that was running) instead of killing or stalling
pytest. The examples are fixed (derandomized); FASTMLP_FUZZ_EXAMPLES sets how many per
target, FASTMLP_FUZZ_SHRINK=1 shrinks a failure to a minimal example (slower).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fastmlp import kernels

DRIVER = Path(__file__).resolve().parent / "fuzz_driver.py"
TIMEOUT_S = 120  # one target takes a few seconds; this is for hangs only
OTHER_TARGETS = (
    "network.constructor", "network.predict", "network.predict_proba", "network.forward", "network.evaluate",
    "network.score", "network.fit", "network.partial_fit", "network.backward", "network.step",
    "network.copy", "network.pickle", "network.pickled_state", "network.decision_function",
    "network.backward_output", "network.layer_cache", "network.from_architecture", "threads.set_num_threads",
)
# Under the CI's sanitizer build a crash is ASan's report and exit status 1, not a signal.
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")
TARGETS = [f"kernels.{name}" for name in kernels.__all__] + list(OTHER_TARGETS)


def run_driver(*args, timeout=TIMEOUT_S, last_case=None):
    env = dict(os.environ)
    if last_case is not None:
        env["FASTMLP_FUZZ_LAST_CASE"] = str(last_case)
    env["FASTMLP_FUZZ_DUMP_AFTER"] = str(timeout * 0.9)  # the stacks of a hang, before it is killed
    return subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_driver_covers_every_target():
    listed = run_driver("--list", timeout=60)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert sorted(listed.stdout.split()) == sorted(TARGETS), "fuzz_driver.py and test_fuzz.py disagree on the targets"


def text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def fuzz(target: str, last_case: Path, timeout=TIMEOUT_S) -> str | None:
    """None when the target kept the contract, else what went wrong: the falsifying
    example, or the case that was running when the process crashed or hung."""
    try:
        result = run_driver(target, last_case=last_case, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        running = last_case.read_text() if last_case.exists() else "(none recorded)"
        return (f"{target}: no answer within {timeout} s (a hang?) while running:\n{running}\n"
                f"output so far:\n{text(expired.stdout)}{text(expired.stderr)}")
    output = (result.stdout + result.stderr)[-20000:]
    if result.returncode < 0:
        running = last_case.read_text() if last_case.exists() else "(none recorded)"
        name = signal.Signals(-result.returncode).name
        return f"{target}: the process died of {name} while running:\n{running}\n{output}"
    if result.returncode > 0 and any(report in output for report in SANITIZER_REPORTS):
        running = last_case.read_text() if last_case.exists() else "(none recorded)"
        return f"{target}: the process died in a sanitizer report while running:\n{running}\n{output}"
    if result.returncode != 0:
        return f"{target}: the contract failed\n{output}"
    return None


def test_a_crash_fails_with_the_case_that_ran(tmp_path):
    failure = fuzz("selftest.segfault", tmp_path / "last_case.txt")
    assert failure is not None and "reading address 0" in failure, failure
    assert "died of SIGSEGV" in failure or "died in a sanitizer report" in failure, failure


def test_a_hang_fails_with_the_case_that_ran(tmp_path):
    failure = fuzz("selftest.hang", tmp_path / "last_case.txt", timeout=10)
    assert failure is not None and "(a hang?)" in failure and "selftest.hang: sleeping" in failure, failure
    assert "Thread" in failure or "File" in failure, f"no stack dumped before the kill:\n{failure}"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target, tmp_path):
    failure = fuzz(target, tmp_path / "last_case.txt")
    if failure is not None:
        pytest.fail(failure, pytrace=False)

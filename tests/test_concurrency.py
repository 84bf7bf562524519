"""A network used while it fits: from signal handlers on the fitting thread and
from other threads (defects 2 and 4).

Each scenario runs in a subprocess with a timeout, so a deadlock fails the test
instead of hanging the suite. The long fits run until the scenario itself ends
them (KeyboardInterrupt), and every assertion is about the order of events,
never about how long something took:

- a SIGALRM handler that predicts and pickles during a fit: the fit completes;
- a handler that calls fit during a fit: RuntimeError out of the fit, no hang;
- two KeyboardInterrupts, the first handled by a handler that predicts: the fit ends;
- a predict from another thread returns while the fit is still running;
- a mutator (forward) from another thread waits until the fit has ended;
- a snapshot from another thread is one state: the parameters, optimizer
  buffers and step count of the same update (a fresh fit of that many steps
  gives exactly them, and a network restored from it continues alike).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

TIMEOUT = 60  # seconds; only reached when a scenario deadlocks

PREAMBLE = """
import os, pickle, signal, sys, threading, time
import numpy as np
import fastmlp as fm

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 8))
y = X[:, :1] * X[:, 1:2] + 0.5 * X[:, 2:3]
net = fm.Network([8, 32, 1], dtype="float64", seed=0)
FOREVER = 10**6  # epochs: a fit that runs until the scenario ends it

def steps_done():  # a reader
    return net._core.snapshot()[2]

def wait_until_fitting():
    while steps_done() == 0:
        time.sleep(0.005)
"""


def run_scenario(body: str) -> str:
    script = PREAMBLE + textwrap.dedent(body)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the scenario did not finish within {TIMEOUT} s: a deadlock")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    return lines[-1][len("RESULT "):]


def test_a_signal_handler_that_predicts_and_pickles_during_a_fit_lets_it_complete():
    result = run_scenario("""
        seen = []
        def handler(signum, frame):
            steps = steps_done()
            assert net.predict(X[:4]).shape == (4, 1)
            clone = pickle.loads(pickle.dumps(net))
            seen.append((steps, clone.params.shape == net.params.shape))

        # size the fit to several of its signal checks (one per 100 ms)
        start = time.perf_counter()
        net.copy().fit(X, y, epochs=20, batch_size=32)
        epochs = max(20, int(1.5 * 20 / (time.perf_counter() - start)))
        total = epochs * 8
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
        net.fit(X, y, epochs=epochs, batch_size=32)
        signal.setitimer(signal.ITIMER_REAL, 0)
        during = [steps for steps, _ in seen if 0 < steps < total]
        print("RESULT", len(during) > 0, all(ok for _, ok in seen), steps_done() == total)
    """)
    assert result == "True True True", "handler ran during the fit, its pickles loaded, the fit completed"


def test_a_signal_handler_that_fits_during_a_fit_raises_instead_of_deadlocking():
    result = run_scenario("""
        def handler(signum, frame):
            if steps_done() == 0:  # not fitting yet: try again later
                signal.setitimer(signal.ITIMER_REAL, 0.02)
                return
            net.fit(X, y, epochs=1)

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        try:
            net.fit(X, y, epochs=FOREVER, batch_size=32)
            print("RESULT the fit completed")
        except RuntimeError as error:
            print("RESULT", error)
    """)
    assert "is running a fit on this thread" in result


def test_two_keyboard_interrupts_end_a_fit_whose_handler_predicts():
    result = run_scenario("""
        handled = []
        first = threading.Event()
        def on_sigint(signum, frame):
            handled.append(net.predict(X[:2]).shape)
            if len(handled) == 1:
                first.set()
                return
            raise KeyboardInterrupt

        def sender():
            wait_until_fitting()
            os.kill(os.getpid(), signal.SIGINT)
            first.wait()
            os.kill(os.getpid(), signal.SIGINT)

        signal.signal(signal.SIGINT, on_sigint)
        threading.Thread(target=sender, daemon=True).start()
        try:
            net.fit(X, y, epochs=FOREVER, batch_size=32)
            print("RESULT the fit completed")
        except KeyboardInterrupt:
            print("RESULT interrupted after", len(handled))
    """)
    assert result == "interrupted after 2"


def test_a_predict_from_another_thread_returns_while_the_fit_runs():
    result = run_scenario("""
        events = []
        def reader():
            wait_until_fitting()
            out = net.predict(X)
            events.append(("predicted", out.shape, bool(np.isfinite(out).all())))
            os.kill(os.getpid(), signal.SIGINT)  # only now does the fit end

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            net.fit(X, y, epochs=FOREVER, batch_size=32)
        except KeyboardInterrupt:
            events.append("fit ended")
        thread.join()
        print("RESULT", events)
    """)
    assert result == "[('predicted', (256, 1), True), 'fit ended']"


def test_a_snapshot_taken_during_a_fit_is_one_consistent_state():
    result = run_scenario("""
        def sgd():
            return fm.SGD(lr=0.01, momentum=0.9)

        taken = []
        def reader():
            while True:
                snapshot = net._core.snapshot()
                if snapshot[2] >= 5:
                    taken.append(snapshot)
                    break
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)

        thread = threading.Thread(target=reader)
        thread.start()
        try:  # full batch, no shuffle: step k's state depends on k alone
            net.fit(X, y, epochs=FOREVER, batch_size=256, shuffle=False, optimizer=sgd())
        except KeyboardInterrupt:
            pass
        thread.join()
        params, kind, steps, buffers, (words, has_spare, spare), _ = taken[0]

        fresh = fm.Network([8, 32, 1], dtype="float64", seed=0)
        fresh.fit(X, y, epochs=steps, batch_size=256, shuffle=False, optimizer=sgd())
        f_params, f_kind, f_steps, f_buffers, *_ = fresh._core.snapshot()
        same = (np.array_equal(params, f_params) and (kind, steps) == (f_kind, f_steps)
                and len(buffers) == len(f_buffers) == 1 and np.array_equal(buffers[0], f_buffers[0]))

        restored = fm.Network([8, 32, 1], dtype="float64", seed=1)
        restored._core.restore(params, sgd()._config(), steps, buffers, words, has_spare, spare)
        restored.fit(X, y, epochs=3, batch_size=256, shuffle=False, optimizer=sgd())
        fresh.fit(X, y, epochs=3, batch_size=256, shuffle=False, optimizer=sgd())
        print("RESULT", same, np.array_equal(restored.params, fresh.params))
    """)
    assert result == "True True", "snapshot equals a fresh fit of its step count; its restore continues alike"


def test_a_mutator_from_another_thread_waits_for_the_whole_fit():
    result = run_scenario("""
        calling, returned = threading.Event(), threading.Event()
        seen = {}
        def mutator():
            wait_until_fitting()
            calling.set()
            net.forward(X[:4])  # changes the training cache: not between two batches
            seen["steps when forward returned"] = steps_done()
            returned.set()

        def watcher():
            calling.wait()
            start = steps_done()
            while steps_done() < start + 20:  # the fit goes on while forward waits
                time.sleep(0.001)
            seen["forward returned while the fit stepped"] = returned.is_set()
            os.kill(os.getpid(), signal.SIGINT)

        threads = [threading.Thread(target=mutator), threading.Thread(target=watcher)]
        for thread in threads:
            thread.start()
        try:
            net.fit(X, y, epochs=FOREVER, batch_size=32)
        except KeyboardInterrupt:
            pass
        for thread in threads:
            thread.join()
        print("RESULT", seen["forward returned while the fit stepped"],
              seen["steps when forward returned"] == steps_done())
    """)
    assert result == "False True", "forward waited while the fit stepped, and returned only once it had ended"

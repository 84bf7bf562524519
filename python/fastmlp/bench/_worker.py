"""A benchmark worker: one implementation (fastmlp or a peer) at one thread count, in a process
of its own, driven by the coordinator (fastmlp.bench._run) over its stdin and stdout.

    python -m fastmlp.bench._worker PEER THREADS

Each request is one line of JSON on stdin, each answer one line of JSON on the original
stdout; whatever the libraries print goes to stderr (from the very start when the coordinator
launches it: its boot line moves stdout aside before importing anything). Requests: {"op": "prepare", "id", "group",
"name", "shape", "quick", "block_seconds"} builds, warms up and calibrates a job; {"op": "block",
"id"} times one block; {"op": "drop", "id"} frees a job; {"op": "exit"}. Answers carry "ok";
a failure answers {"ok": false, "error": "..."} and the worker goes on."""

from __future__ import annotations

import gc
import json
import os
import platform
import sys

from . import _jobs, _machine

_LIMITS: list = []  # threadpoolctl's limit, kept for the worker's life


def _hello(peer: str, threads: int) -> dict:
    """Imports the peer, sets its threads, and says what it runs on."""
    import numpy as np

    import fastmlp as fm
    from fastmlp import _core

    fm.set_num_threads(threads)
    info = {"python": platform.python_version(), "numpy": np.__version__, "fastmlp": fm.__version__,
            "pid": os.getpid()}
    if peer == "fastmlp":
        info["gemm_kernel"] = fm.kernels.gemm_kernel()
        info["gemm_config"] = _machine.gemm_config_description(_core)
    elif peer == "torch":
        import torch

        torch.set_num_threads(threads)
        info["version"] = torch.__version__
        info["mkl"] = bool(torch.backends.mkl.is_available())
        info["blas"] = "MKL" if info["mkl"] else "torch's own"
        if hasattr(torch.backends, "cpu"):
            info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    elif peer == "sklearn":
        import sklearn
        import sklearn.neural_network

        info["version"] = sklearn.__version__
    if peer in ("numpy", "reference", "sklearn"):
        try:
            import threadpoolctl
        except ImportError:
            threadpoolctl = None
        else:
            _LIMITS.append(threadpoolctl.threadpool_limits(limits=threads, user_api="blas"))
        info["blas"] = _machine.blas_description(threadpoolctl)
    return info


def main(argv: list[str]) -> int:
    """``python -m fastmlp.bench._worker PEER THREADS`` by hand (the coordinator starts workers
    with a boot line that moves stdout aside before any import: fastmlp.bench._run)."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the libraries' prints go to stderr
    return serve(argv, answers)


def serve(argv: list[str], answers) -> int:
    """Answers the coordinator's requests on ``answers`` until it says exit or closes stdin."""
    peer, threads = argv[0], int(argv[1])

    def answer(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    try:
        answer({"ok": True, "info": _hello(peer, threads)})
    except Exception as error:
        answer({"ok": False, "error": f"{type(error).__name__}: {error}"})
        return 1
    jobs: dict[str, _jobs.Job] = {}
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "exit":
                break
            if op == "prepare":
                job = _jobs.make_job(request["group"], request["name"], peer, request["quick"], request.get("shape"))
                job.prepare(request["block_seconds"])
                jobs[request["id"]] = job
                answer({"ok": True, "unit": job.unit, "info": job.describe()})
            elif op == "block":
                taken = _machine.Taken(threads)
                block = jobs[request["id"]].block()
                answer({"ok": True, "work": block.work, "seconds": block.seconds, "loss": block.loss,
                        "taken": taken.share()})
            elif op == "drop":
                jobs.pop(request["id"], None)
                gc.collect()
                answer({"ok": True})
            else:
                answer({"ok": False, "error": f"unknown request {op!r}"})
        except Exception as error:
            jobs.pop(request.get("id"), None)
            answer({"ok": False, "error": f"{type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

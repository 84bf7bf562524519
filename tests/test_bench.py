"""fastmlp bench: peer detection, the table and the JSON built from made-up figures, and short
real runs that check the command's plumbing (never its timings)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import fastmlp as fm
import pytest
from fastmlp import bench, cli
from fastmlp.bench import _configs, _machine, _peers, _report, _run
from fastmlp.bench._report import Report, Result

REPO = Path(__file__).resolve().parents[1]


# ---- peer detection --------------------------------------------------------------------------------
def test_a_missing_peer_is_not_available_and_says_how_to_install_it():
    torch = _peers.peer("torch")
    detection = _peers.detect(torch, find_spec=lambda name: None)
    assert not detection.available and detection.version is None
    assert detection.reason == "not installed"
    assert "pip install torch" in detection.line and "PyTorch" in detection.line


def test_a_peer_whose_parent_fails_to_import_is_not_available():
    def broken(name):
        raise ImportError("libtorch_cpu.so: cannot open shared object file")

    detection = _peers.detect(_peers.peer("torch"), find_spec=broken)
    assert not detection.available
    assert "not importable" in detection.reason and "libtorch_cpu.so" in detection.reason


def test_a_found_peer_reports_its_distribution_version_without_importing_it():
    asked = []

    def version(distribution):
        asked.append(distribution)
        return "9.9.9"

    detection = _peers.detect(_peers.peer("sklearn"), find_spec=lambda name: object(), version=version)
    assert detection.available and detection.version == "9.9.9" and asked == ["scikit-learn"]
    assert detection.line == "scikit-learn 9.9.9"


def test_a_found_peer_without_metadata_is_available_with_no_version():
    def version(distribution):
        raise importlib.metadata.PackageNotFoundError(distribution)

    detection = _peers.detect(_peers.peer("torch"), find_spec=lambda name: object(), version=version)
    assert detection.available and detection.version is None


def test_fastmlp_and_its_numpy_peers_are_always_found():
    found = {d.peer.key: d for d in _peers.detect_all()}
    assert list(found) == [p.key for p in _peers.PEERS]  # the table's order, fastmlp first
    for key in ("fastmlp", "reference", "numpy"):
        assert found[key].available, found[key].reason
    assert found["fastmlp"].version == importlib.metadata.version("fastmlp")


def test_detect_all_keeps_fastmlp_and_the_peers_named():
    assert [d.peer.key for d in _peers.detect_all([])] == ["fastmlp"]
    assert [d.peer.key for d in _peers.detect_all(["numpy", "torch"])] == ["fastmlp", "torch", "numpy"]


@pytest.mark.parametrize("text, keys", [
    ("torch", ["torch"]),
    ("PyTorch, scikit-learn ,numpy-reference", ["torch", "sklearn", "reference"]),
    ("fastmlp.reference,NumPy BLAS,torch,torch", ["reference", "numpy", "torch"]),
    ("fastmlp,sklearn", ["sklearn"]),
    ("none", []),
])
def test_peer_names_are_read_in_their_usual_spellings(text, keys):
    assert _peers.parse_peers(text) == keys


def test_an_unknown_peer_is_named_in_the_error():
    with pytest.raises(ValueError, match="'tensorflow'"):
        _peers.parse_peers("torch,tensorflow")


def fake_worker(code: str) -> list[str]:
    """A worker command that runs ``code`` (with json, os, sys, time imported) instead of fastmlp's."""
    return [sys.executable, "-c", "import json, os, sys, time\n" + code]


HELLO_WITH_ENV = ('print(json.dumps({"ok": True, "info": {k: os.environ.get(k) for k in '
                  '("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}}), flush=True)\n'
                  'sys.stdin.readline()')


def test_numpy_blas_peers_run_without_the_openblas_workarounds(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    assert {p.key for p in _peers.PEERS if p.uses_numpy_blas} == {"sklearn", "reference", "numpy"}
    for p in _peers.PEERS:
        worker = _run.Worker(p, 3, 30, command=fake_worker(HELLO_WITH_ENV))
        worker.close()
        expected = None if p.uses_numpy_blas else "Haswell"
        assert worker.info["OPENBLAS_CORETYPE"] == expected, p.key
        assert worker.info["OMP_NUM_THREADS"] == "3"
    report = _run.run(_run.Options(configs=["gemm"], quick=True, threads=[1], repeats=1, block_seconds=0.001,
                                   peak=False, noise_seconds=0.01),
                      detections=[_peers.detect(_peers.peer("numpy"))], sleep=lambda s: None)
    assert any("OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=1048576 unset" in note for note in report.notes)
    assert [(r.peer, r.error) for r in report.results] == [("numpy", None)] * 2  # NumPy's worker ran


def test_a_worker_that_answers_nonsense_is_killed():
    with pytest.raises(_run.WorkerError, match="bad answer b'hello'"):
        _run.Worker(_peers.FASTMLP, 1, 30, command=fake_worker('print("hello", flush=True)\ntime.sleep(60)'))


def test_a_worker_that_dies_says_how():
    code = 'sys.stderr.write("Segmentation fault\\n")\nsys.exit(3)'
    with pytest.raises(_run.WorkerError, match=r"exit code 3\): Segmentation fault"):
        _run.Worker(_peers.FASTMLP, 1, 30, command=fake_worker(code))


def test_a_worker_that_hangs_is_killed_at_the_timeout():
    with pytest.raises(_run.WorkerError, match="no answer within 0.3 s"):
        _run.Worker(_peers.FASTMLP, 1, 0.3, command=fake_worker("time.sleep(60)"))


def test_a_dead_worker_is_started_again_for_the_next_configuration():
    dead = _run.Worker(_peers.FASTMLP, 1, 30, command=fake_worker('print(json.dumps({"ok": True}), flush=True)'))
    dead.process.wait(timeout=30)
    workers = {"fastmlp": dead}
    report = made_up_report()
    worker = _run._worker(report, workers, _peers.FASTMLP, 1, _run.Options(timeout=60))
    try:
        assert worker is not dead and worker.alive and workers["fastmlp"] is worker
        assert worker.info["pid"] == worker.process.pid
    finally:
        worker.close()
    assert not worker.alive


def test_a_block_that_fails_after_others_keeps_their_median():
    report = made_up_report()
    result = Result("wide", "train", "", 2, "torch", "samples/s", [10.0, 12.0])
    _run._interrupted(report, result, "no answer within 600 s (killed)")
    assert result.error is None and result.median == 11.0
    assert "the figure is the median of the 2 blocks before" in report.notes[-1]
    first = Result("wide", "train", "", 2, "torch")
    _run._interrupted(report, first, "the worker stopped (exit code -9)")
    assert first.error == "the worker stopped (exit code -9)"


PROC_STAT = """cpu  100 0 50 1000 10 0 5 7 0 0
cpu0 60 0 30 500 5 0 5 3 0 0
cpu1 40 0 20 500 5 0 0 4 0 0
intr 12345
"""


def test_proc_stat_counts_only_the_cpus_asked_for():
    assert _machine.parse_proc_stat(PROC_STAT) == (162, 7)  # all but idle and iowait; steal
    assert _machine.parse_proc_stat(PROC_STAT, frozenset({0})) == (98, 3)
    assert _machine.parse_proc_stat(PROC_STAT, frozenset({0, 1})) == (162, 7)
    assert _machine.parse_proc_stat(PROC_STAT, frozenset({5})) is None
    assert _machine.parse_proc_stat("intr 1\n") is None


@pytest.mark.parametrize("busy, own, threads, cores, expected", [
    (2.0, 2.0, 2, 2, 0.0),    # all the busy time was ours
    (2.0, 1.0, 2, 2, 0.5),    # another process had one of our two CPUs
    (2.0, 1.0, 1, 2, 0.0),    # ... the one our single thread left idle
    (3.0, 1.0, 1, 3, 0.0),    # two others on the two idle CPUs of three
    (2.0, 0.5, 1, 2, 0.5),    # others used 1.5: one idle CPU's worth, and half of ours
    (9.0, 0.0, 2, 2, 1.0),    # clamped
])
def test_taken_share_charges_only_what_others_took_from_our_cpus(busy, own, threads, cores, expected):
    assert _machine.taken_share(busy, own, 1.0, threads, cores, 0.0) == pytest.approx(expected)
    assert _machine.taken_share(busy, own, 1.0, threads, cores, 0.02) <= expected  # ticks forgiven


class FakeWorker:
    """Answers blocks with the given shares of CPU taken, one after another."""

    def __init__(self, taken):
        self.taken = list(taken)

    def ask(self, request):
        return {"ok": True, "work": 100.0, "seconds": 1.0 + self.taken[0], "loss": 0.5, "taken": self.taken.pop(0)}


def test_a_disturbed_block_is_run_again_and_the_least_disturbed_kept():
    options = _run.Options(max_taken=0.1, max_reruns=2)
    task = _run.Task("mnist-mlp", "train", _configs.MNIST)
    result = Result("mnist-mlp", "train", "", 2, "fastmlp")
    worker = FakeWorker([0.5, 0.05, 0.9])
    _run._time_block(worker, task, result, options, sleep=lambda s: None)
    assert result.reruns == 1 and result.taken == [0.05] and result.rates == [pytest.approx(100 / 1.05)]
    assert worker.taken == [0.9] and "disturbed" not in result.info
    always = Result("mnist-mlp", "train", "", 2, "fastmlp")
    _run._time_block(FakeWorker([0.5, 0.3, 0.4]), task, always, options, sleep=lambda s: None)
    assert always.reruns == 2 and always.taken == [0.3] and always.info["disturbed"] == 1
    report = made_up_report()
    report.results.append(always)
    assert "disturbed: 1 block kept although" in report.text()


@pytest.mark.parametrize("changes, message", [
    ({"max_reruns": -1}, "Options.max_reruns"),
    ({"repeats": 0}, "Options.repeats"),
    ({"configs": ["nope"]}, "unknown configuration 'nope'"),
    ({"configs": []}, "Options.configs"),
    ({"threads": [0]}, "Options.threads"),
    ({"threads": [2, True]}, "Options.threads"),
    ({"block_seconds": 600}, "Options.block_seconds"),
    ({"dtypes": ("float16",)}, "Options.dtypes"),
    ({"gemm_set": "huge"}, "Options.gemm_set"),
    ({"peers": ["tensorflow"]}, "unknown peer 'tensorflow'"),
    ({"noise_seconds": 0}, "Options.noise_seconds"),
])
def test_options_name_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        _run.Options(**changes)


def test_quick_options_are_quick_from_python_too():
    quick, full = _run.Options(quick=True), _run.Options()
    assert (quick.repeats, quick.block_seconds, quick.noise_seconds) == (3, 0.1, 0.25)
    assert (full.repeats, full.block_seconds, full.noise_seconds) == (5, 0.5, 0.5)
    assert _run.Options(quick=True, repeats=7).repeats == 7


def test_options_read_aliases_spellings_and_drop_duplicates():
    options = _run.Options(configs=["demo", "seed-demo", "gemm"], peers=["PyTorch", "torch", "NumPy BLAS"],
                           threads=[2, 1, 2], dtypes=("float64", "float64"))
    assert options.configs == ["seed-demo", "gemm"] and options.peers == ["torch", "numpy"]
    assert options.threads == [2, 1] and options.dtypes == ("float64",)
    assert _run.Options(peers=[]).peers == []


# ---- the table, from made-up figures ------------------------------------------------------------------
def made_up_report() -> Report:
    peers = [_run._peer_dict(d) for d in (
        _peers.detect(_peers.peer("fastmlp")),
        _peers.Detection(_peers.peer("torch"), True, "2.13.0"),
        _peers.Detection(_peers.peer("sklearn"), False, None, "not installed"),
        _peers.Detection(_peers.peer("reference"), True, None),
        _peers.Detection(_peers.peer("numpy"), True, "2.0"),
    )]
    report = Report(machine={"cpu": "Test CPU", "cores": 2, "platform": "Linux x86_64",
                             "peak_gflops": {"float32": {"1": 100.0}}, "peak_probe": "made up"},
                    versions={"fastmlp": "0.1.0", "PyTorch": "2.13.0"},
                    settings={"threads": [1], "repeats": 3, "block_seconds": 0.5, "pause": 0.1, "max_taken": 0.1,
                              "command": "fastmlp bench --made-up"},
                    peers=peers)
    report.results = [
        Result("mnist-mlp", "train", "d", 1, "fastmlp", "samples/s", [100.0, 110.0, 90.0], [0.0] * 3),
        Result("mnist-mlp", "train", "d", 1, "torch", "samples/s", [50.0, 50.0, 50.0], [0.0] * 3, reruns=2),
        Result("mnist-mlp", "train", "d", 1, "reference", "samples/s", [], [], error="KeyError: 'x'"),
        Result("predict", "predict", "d", 1, "fastmlp", "calls/s", [1e5, 1e5], [0.0, 0.0]),
        Result("predict", "predict", "d", 1, "torch", "calls/s", [2.5e4], [0.0]),
        Result("gemm square 1024 float32", "gemm", "d", 1, "fastmlp", "GFLOP/s", [80.0, 80.0], [None, None],
               percent_of_peak=80.0),
        Result("gemm square 1024 float32", "gemm", "d", 1, "numpy", "GFLOP/s", [64.0, 64.0], [None, None]),
    ]
    return report


def test_medians_and_spreads():
    fast = made_up_report().results[0]
    assert fast.median == 100.0
    assert fast.spread == pytest.approx(0.1)  # half of (110 − 90), over 100
    assert math.isnan(Result("x", "train", "", 1, "fastmlp", rates=[5.0]).spread)


def test_the_table_has_fastmlp_then_each_peer_and_its_ratio():
    header, rows = made_up_report().table()
    assert header == ["configuration", "threads", "unit", "fastmlp", "% of peak", "PyTorch", "÷",
                      "NumPy reference", "÷", "NumPy BLAS", "÷"]  # scikit-learn has no result: no column
    by_config = {row[0]: row for row in rows}
    mnist = by_config["mnist-mlp"]
    assert mnist[:5] == ["mnist-mlp", "1", "samples/s", "100 ±10 %", "—"]
    assert mnist[5:9] == ["50 ±0 %", "2.00× ±10 %", "failed", "—"]
    assert mnist[9:] == ["—", "—"]
    predict = by_config["predict"]
    assert predict[2] == "µs per call" and predict[3] == "10.0 ±0 %"  # 1e5 calls/s: 10 µs a call
    assert predict[5:7] == ["40.0", "4.00× ±0 %"]  # one block: no spread of its own
    gemm = by_config["gemm square 1024 float32"]
    assert gemm[3:5] == ["80 ±0 %", "80 %"] and gemm[9:] == ["64 ±0 %", "1.25× ±0 %"]


def test_rows_keep_a_configuration_s_thread_counts_together():
    report = made_up_report()
    report.results = [Result("mnist-mlp", "train", "", 1, "fastmlp", rates=[1.0]),
                      Result("predict", "predict", "", 1, "fastmlp", rates=[1.0]),
                      Result("mnist-mlp", "train", "", 2, "fastmlp", rates=[2.0]),
                      Result("predict", "predict", "", 2, "fastmlp", rates=[2.0])]
    assert [(config, threads) for config, threads, _ in report.rows()] == [
        ("mnist-mlp", 1), ("mnist-mlp", 2), ("predict", 1), ("predict", 2)]


def test_the_ratios_of_the_json_are_fastmlp_over_each_peer():
    ratios = {(r["config"], r["peer"]): r for r in made_up_report().comparisons()}
    assert ratios[("mnist-mlp", "torch")]["ratio"] == pytest.approx(2.0)
    assert ratios[("mnist-mlp", "torch")]["spread"] == pytest.approx(0.1)
    assert ratios[("mnist-mlp", "reference")]["ratio"] is None  # it failed
    assert ratios[("predict", "torch")]["ratio"] == pytest.approx(4.0)
    assert ratios[("gemm square 1024 float32", "numpy")]["ratio"] == pytest.approx(1.25)


def test_the_text_names_missing_peers_failures_and_reruns():
    text = made_up_report().text()
    assert "machine:  Test CPU" in text and "FMA peak: float32 100 GFLOP/s at 1 thread" in text
    assert "missing:  scikit-learn (not installed); to compare with it: pip install" in text
    assert "failed:   NumPy reference, mnist-mlp at 1 thread: KeyError: 'x'" in text
    assert "reruns:   2 blocks run again" in text
    table = text.split("\n\n")[1].splitlines()
    assert len({len(line) for line in table}) == 1  # columns padded to one width


def test_the_json_document(tmp_path):
    path = tmp_path / "bench.json"
    made_up_report().write_json(str(path))
    document = json.loads(path.read_text())
    assert document["schema"] == "fastmlp.bench/1"
    assert {"machine", "versions", "settings", "peers", "noise", "results", "ratios", "notes"} <= set(document)
    first = document["results"][0]
    assert first["peer"] == "fastmlp" and first["median"] == 100.0 and first["spread"] == pytest.approx(0.1)
    assert document["results"][3]["latency_us"] == pytest.approx(10.0)
    assert [p["key"] for p in document["peers"] if not p["available"]] == ["sklearn"]
    json.dumps(document, allow_nan=False)  # no NaN: strict readers accept it
    report = made_up_report()
    report.results[0].loss = float("nan")  # a diverged training
    report.results[0].info["relative_error"] = float("inf")
    report.write_json(str(path))
    first = json.loads(path.read_text())["results"][0]
    assert first["loss"] is None and first["info"]["relative_error"] is None


@pytest.mark.parametrize("text", [f"a\n{_report.MARK_BEGIN}\nb\n", f"a\n{_report.MARK_END}\nb\n",
                                  f"{_report.MARK_END}\nold\n{_report.MARK_BEGIN}\n"])
def test_markdown_never_overwrites_a_file_whose_markers_are_broken(tmp_path, capsys, text):
    path = tmp_path / "RESULTS.md"
    path.write_text(text)
    with pytest.raises(ValueError, match="not written"):
        made_up_report().write_markdown(str(path))
    assert path.read_text() == text
    assert cli.main(["bench", *QUICK, "--peers", "none", "--markdown", str(path)]) == 2  # refused before running
    assert "will not write" in capsys.readouterr().err and path.read_text() == text


def test_a_json_report_reads_back_into_the_same_table(tmp_path, capsys):
    report = made_up_report()
    path = tmp_path / "bench.json"
    report.write_json(str(path))
    again = _report.Report.from_json(json.loads(path.read_text()))
    assert again.table() == report.table() and again.text() == report.text()
    markdown = tmp_path / "bench.md"
    assert cli.main(["bench", "--from-json", str(path), "--markdown", str(markdown)]) == 0
    assert capsys.readouterr().out == report.text() and markdown.read_text() == report.markdown()
    assert cli.main(["bench", "--from-json", str(markdown)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema": _report.SCHEMA, "results": [{"config": "x"}]}))
    assert cli.main(["bench", "--from-json", str(broken)]) == 2
    assert "incomplete or malformed" in capsys.readouterr().err
    assert cli.main(["bench", "--from-json", str(path), "--markdown", str(path)]) == 2
    assert "names the --from-json file itself" in capsys.readouterr().err
    assert json.loads(path.read_text())["schema"] == _report.SCHEMA  # untouched
    assert cli.main(["bench", "--from-json", str(path), "--quick", "--threads", "1"]) == 2
    assert "--quick, --threads would not apply" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a fastmlp bench report"):
        _report.Report.from_json({"schema": "other/1"})


def test_markdown_refuses_a_file_that_is_not_text(tmp_path, capsys):
    path = tmp_path / "RESULTS.md"
    path.write_bytes(b"caf\xe9\n")
    assert cli.main(["bench", *QUICK, "--peers", "none", "--markdown", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err and path.read_bytes() == b"caf\xe9\n"


def test_a_file_that_cannot_be_written_after_the_run_still_leaves_the_table(tmp_path, capsys, monkeypatch):
    def fail(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_report.Report, "write_json", fail)
    code = cli.main(["bench", *QUICK, "--configs", "demo", "--peers", "none", "--json", str(tmp_path / "b.json")])
    captured = capsys.readouterr()
    assert code == 2 and "seed-demo" in captured.out
    assert "--json:" in captured.err and "No space left on device" in captured.err


def test_markdown_replaces_only_the_text_between_the_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Results\nkept above\n{_report.MARK_BEGIN}\nold run\n{_report.MARK_END}\nkept below\n")
    made_up_report().write_markdown(str(path))
    text = path.read_text()
    assert text.startswith("# Results\nkept above\n") and text.endswith(f"{_report.MARK_END}\nkept below\n")
    assert "old run" not in text and "| mnist-mlp | 1 | samples/s | 100 ±10 % |" in text
    fresh = tmp_path / "new.md"
    made_up_report().write_markdown(str(fresh))
    assert fresh.read_text().startswith("### fastmlp bench\n\n`fastmlp bench --made-up`")


def test_goals_compare_with_the_project_targets():
    report = made_up_report()
    tasks = [_run.Task("mnist-mlp", "train", _configs.MNIST), _run.Task("predict", "predict", _configs.PREDICT)]
    goals = {(g["config"], g["peer"]): g for g in _run.goals(report, tasks)}
    assert goals[("mnist-mlp", "torch")]["met"] and goals[("mnist-mlp", "torch")]["target"] == 1.5
    assert goals[("predict", None)]["value"] == pytest.approx(10.0) and goals[("predict", None)]["met"]
    assert ("mnist-mlp", "sklearn") not in goals  # no figure, no verdict


# ---- what runs ----------------------------------------------------------------------------------------
def test_tasks_follow_the_standard_order_and_expand_the_gemm_shapes():
    options = _run.Options(configs=["gemm", "predict", "demo", "wide"], quick=True, dtypes=("float32", "float64"))
    ids = [t.id for t in _run.tasks(options)]
    assert ids[:3] == ["seed-demo", "wide", "predict"]
    assert ids[3:] == ["gemm square 1024 float32", "gemm mnist-mlp fwd float32",
                       "gemm square 1024 float64", "gemm mnist-mlp fwd float64"]


def test_scikit_learn_runs_no_residual_network_and_numpy_blas_only_gemm():
    residual = _run.Task("deep-residual", "train", _configs.train_config("deep-residual"))
    plain = _run.Task("mnist-mlp", "train", _configs.MNIST)
    assert not _run.runs(_peers.peer("sklearn"), residual) and _run.runs(_peers.peer("sklearn"), plain)
    assert _run.runs(_peers.peer("torch"), residual)
    assert not _run.runs(_peers.peer("numpy"), plain)


def test_gemm_sets_keep_their_shapes():
    default = _configs.gemm_shapes("default", False, ("float32", "float64"))
    assert len(default) == 2 * (4 + 3 * 3)
    issue10 = _configs.gemm_shapes("issue10", False, ("float32",))
    assert [s.threads for s in issue10] == [1] * 6 + [2]
    with pytest.raises(ValueError, match="'huge'"):
        _configs.gemm_shapes("huge", False, ("float32",))


def test_progress_bar_only_when_enabled(capsys):
    bar = _run.Progress(4, enabled=True)
    bar.step("mnist-mlp: PyTorch")
    bar.close()
    assert "[#######" in capsys.readouterr().err
    quiet = _run.Progress(4, enabled=False)
    quiet.step("x")
    quiet.close()
    assert capsys.readouterr().err == ""


QUICK = ["--quick", "--threads", "1", "--repeats", "2", "--block-seconds", "0.01", "--pause", "0.001", "--no-peak"]


def test_the_command_writes_json_that_reads_back(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--configs", "demo,gemm", "--peers", "reference,numpy", *QUICK, "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "configuration" in out and "seed-demo" in out and "NumPy BLAS" in out
    document = json.loads(path.read_text())
    assert document["schema"] == "fastmlp.bench/1"
    assert document["settings"]["command"].startswith("fastmlp bench --configs demo,gemm")
    rows = {(r["config"], r["peer"]): r for r in document["results"]}
    assert set(rows) == {("seed-demo", "fastmlp"), ("seed-demo", "reference"),
                         ("gemm square 1024 float32", "fastmlp"), ("gemm square 1024 float32", "numpy"),
                         ("gemm mnist-mlp fwd float32", "fastmlp"), ("gemm mnist-mlp fwd float32", "numpy")}
    for row in rows.values():
        assert row["error"] is None and len(row["rates"]) == 2 and row["median"] > 0
        assert all(t is None or 0 <= t <= 1 for t in row["taken"])
    assert rows[("seed-demo", "fastmlp")]["unit"] == "samples/s"
    assert rows[("gemm square 1024 float32", "numpy")]["unit"] == "GFLOP/s"
    ratios = {(r["config"], r["peer"]): r["ratio"] for r in document["ratios"]}
    assert set(ratios) == {("seed-demo", "reference"), ("gemm square 1024 float32", "numpy"),
                           ("gemm mnist-mlp fwd float32", "numpy")}
    assert all(ratio > 0 for ratio in ratios.values())
    expected = rows[("seed-demo", "fastmlp")]["median"] / rows[("seed-demo", "reference")]["median"]
    assert ratios[("seed-demo", "reference")] == pytest.approx(expected)
    noise = document["noise"]["start"]
    assert noise is not None and 0 <= noise["stolen"] <= 1


def test_a_wrong_gemm_product_fails_its_cell_untimed():
    from fastmlp.bench import _jobs

    job = _jobs.GemmJob(_configs.GemmShape("t", "A·B", 5, 7, 33, trans_b=True), "numpy", quick=True)
    job.prepare(0.001)
    assert job.error < 1e-6
    wrong = _jobs.GemmJob(_configs.GemmShape("t", "A·B", 5, 7, 33, dtype="float64"), "numpy", quick=True)
    wrong.call = lambda: wrong.c.fill(1.0)
    with pytest.raises(ArithmeticError, match="wrong product"):
        wrong.prepare(0.001)
    unwritten = _jobs.GemmJob(_configs.GemmShape("t", "A·B", 3, 3, 3), "numpy", quick=True)
    unwritten.call = lambda: None  # left the NaN the check fills in
    with pytest.raises(ArithmeticError, match="wrong product"):
        unwritten.prepare(0.001)


def test_a_peer_that_fails_costs_only_its_own_row():
    bogus = _peers.Peer("bogus", "Bogus", "os", None, ("train",), "pip install bogus")
    detections = [_peers.detect(_peers.FASTMLP), _peers.Detection(bogus, True, None)]
    options = _run.Options(configs=["seed-demo"], threads=[1], quick=True, repeats=1, block_seconds=0.01,
                           pause=0.001, peak=False, noise_seconds=0.01)
    report = _run.run(options, detections=detections, sleep=lambda s: None)
    fast, failed = report.results
    assert fast.peer == "fastmlp" and fast.error is None and len(fast.rates) == 1
    assert failed.peer == "bogus" and "KeyError" in failed.error
    assert "failed:   Bogus, seed-demo at 1 thread: KeyError" in report.text()


@pytest.mark.parametrize("argv, message", [
    (["--configs", "demo,nope"], "unknown configuration 'nope'"),
    (["--peers", "tensorflow"], "unknown peer 'tensorflow'"),
    (["--threads", "0"], "thread counts"),
    (["--repeats", "0"], "--repeats: expected an integer in [1, 1000]"),
    (["--dtypes", "float16"], "float32 and/or float64"),
    (["--json", "/nonexistent-folder/bench.json"], "--json: cannot write"),
    (["--max-taken", "2"], "--max-taken"),
    (["--block-seconds", "600"], "--block-seconds"),
    (["--repeats", "1001"], "--repeats"),
    (["--json", "same.md", "--markdown", "same.md"], "--json and --markdown name the same file"),
])
def test_bad_options_are_named_before_anything_runs(capsys, argv, message):
    assert cli.main(["bench", *QUICK, "--configs", "demo", "--peers", "none", *argv]) == 2
    assert message in capsys.readouterr().err


def test_python_m_fastmlp_bench_and_the_old_script_run_the_same_code(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    path = tmp_path / "configs.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_configs.py"), "--only", "seed-demo",
                             "--skip", "PyTorch,scikit-learn,fastmlp.reference", *QUICK, "--json", str(path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(path.read_text())
    assert [(r["config"], r["peer"]) for r in document["results"]] == [("seed-demo", "fastmlp")]
    assert document["settings"]["command"].startswith("fastmlp bench --configs seed-demo --threads 1")
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_configs.py"), "--skip", "tensorflow"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "unknown peer 'tensorflow'" in bad.stderr and "Traceback" not in bad.stderr
    help_text = subprocess.run([sys.executable, "-m", "fastmlp", "bench", "--help"], capture_output=True, text=True,
                               timeout=60, env=env)
    assert help_text.returncode == 0 and "--markdown" in help_text.stdout
    assert fm.bench.CONFIG_NAMES == bench.CONFIG_NAMES

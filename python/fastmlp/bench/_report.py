"""From timed blocks to what ``fastmlp bench`` prints: medians, spreads, ratios, the table (as
text or Markdown) and the JSON document. Nothing here times anything, so the tests can build
reports from made-up blocks."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field

from ._peers import PEERS

SCHEMA = "fastmlp.bench/1"
MARK_BEGIN = "<!-- fastmlp bench: begin -->"
MARK_END = "<!-- fastmlp bench: end -->"


@dataclass
class Result:
    """One implementation's figures for one configuration at one thread count."""

    config: str  # "mnist-mlp", "predict", "gemm square 1024 float32"
    group: str  # "train", "predict" or "gemm"
    description: str
    threads: int
    peer: str  # the peer's key: "fastmlp", "torch", ...
    unit: str = ""  # of the rates: "samples/s", "steps/s", "calls/s", "GFLOP/s"
    rates: list[float] = field(default_factory=list)  # one per kept block
    taken: list[float | None] = field(default_factory=list)  # others' share of the CPU, per kept block
    reruns: int = 0  # blocks run again because another process took the CPU
    loss: float | None = None  # training: the last kept block's loss (a check that it trains, not a comparison)
    info: dict = field(default_factory=dict)
    error: str | None = None
    percent_of_peak: float | None = None  # GEMM: the median's share of the FMA peak

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else math.nan

    @property
    def spread(self) -> float:
        """Half the range of the blocks' rates, relative to the median (NaN for one block)."""
        if len(self.rates) < 2:
            return math.nan
        return (max(self.rates) - min(self.rates)) / 2 / self.median

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(median=_finite(self.median), spread=_finite(self.spread),
                    latency_us=_finite(1e6 / self.median) if self.group == "predict" and self.rates else None)
        return _clean(data)


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _clean(value):
    """``value`` with every NaN or infinity (a diverged loss, say) replaced by None: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def markers_problem(text: str) -> str | None:
    """Why a Markdown file's text cannot take a run between its markers (one marker alone, or
    the end before the beginning), or None: both in order, or neither (the file is replaced)."""
    begin, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if begin < 0 and end < 0:
        return None
    if begin < 0 or end < 0:
        return f"it has {MARK_BEGIN if begin >= 0 else MARK_END} without {MARK_END if begin >= 0 else MARK_BEGIN}"
    if end < begin:
        return f"its {MARK_END} comes before its {MARK_BEGIN}"
    return None


@dataclass
class Comparison:
    """fastmlp beside one peer: fastmlp's speed ÷ the peer's (above 1: fastmlp is faster)."""

    ratio: float
    spread: float  # relative: the two spreads added, a bound on the ratio's

    @classmethod
    def of(cls, fast: Result, other: Result) -> Comparison | None:
        if fast.error or other.error or not fast.rates or not other.rates:
            return None
        spread = (fast.spread if math.isfinite(fast.spread) else 0) + (other.spread if math.isfinite(other.spread) else 0)
        return cls(fast.median / other.median, spread)


@dataclass
class Report:
    """Everything one run measured, and what it could not."""

    machine: dict
    versions: dict
    settings: dict
    peers: list[dict]  # {key, label, available, version, reason, hint}
    results: list[Result] = field(default_factory=list)
    noise: dict = field(default_factory=dict)  # "start"/"end": the spin probe's dicts
    notes: list[str] = field(default_factory=list)
    goals: list[dict] = field(default_factory=list)  # the project's targets, when asked for
    wall_seconds: float | None = None

    # ---- the table ----
    def rows(self) -> list[tuple[str, int, dict[str, Result]]]:
        """(configuration, threads, {peer: result}): configurations in the order they ran, each
        one's thread counts together, in increasing order."""
        rows: dict[tuple[str, int], dict[str, Result]] = {}
        for result in self.results:
            rows.setdefault((result.config, result.threads), {})[result.peer] = result
        order = list(dict.fromkeys(config for config, _ in rows))
        keys = sorted(rows, key=lambda key: (order.index(key[0]), key[1]))
        return [(config, threads, rows[(config, threads)]) for config, threads in keys]

    def columns(self) -> list[str]:
        """The peers with a result, in the table's order (fastmlp first)."""
        present = {r.peer for r in self.results}
        order = [p["key"] for p in self.peers] + [p.key for p in PEERS]
        return sorted(present, key=lambda key: (key != "fastmlp", order.index(key) if key in order else len(order)))

    def label(self, key: str) -> str:
        """A peer's name in the table: "PyTorch" for torch."""
        return next((p["label"] for p in self.peers if p["key"] == key), key)

    def comparisons(self) -> list[dict]:
        """One per row and peer: {config, threads, peer, ratio, spread} (JSON's "ratios")."""
        out = []
        for config, threads, by_peer in self.rows():
            fast = by_peer.get("fastmlp")
            if fast is None:
                continue
            for key, other in by_peer.items():
                if key == "fastmlp":
                    continue
                comparison = Comparison.of(fast, other)
                out.append({"config": config, "threads": threads, "peer": key,
                            "ratio": None if comparison is None else _finite(comparison.ratio),
                            "spread": None if comparison is None else _finite(comparison.spread)})
        return out

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The header and rows of the one table: each configuration and thread count, fastmlp's
        figure with its spread, and per peer its figure and fastmlp ÷ it."""
        columns = self.columns()
        header = ["configuration", "threads", "unit", "fastmlp"]
        if any(r.group == "gemm" for r in self.results):
            header.append("% of peak")
        for key in columns[1:]:
            header += [self.label(key), "÷"]
        body = []
        for config, threads, by_peer in self.rows():
            first = next((r for r in by_peer.values() if r.unit), next(iter(by_peer.values())))
            row = [config, str(threads), display_unit(first), cell(by_peer.get("fastmlp"))]
            if "% of peak" in header:
                fast = by_peer.get("fastmlp")
                row.append(f"{fast.percent_of_peak:.0f} %" if fast and fast.percent_of_peak is not None else "—")
            for key in columns[1:]:
                other = by_peer.get(key)
                row.append(cell(other))
                comparison = None if other is None or "fastmlp" not in by_peer else Comparison.of(by_peer["fastmlp"], other)
                row.append("—" if comparison is None else ratio_text(comparison))
            body.append(row)
        return header, body

    # ---- output ----
    def header_lines(self) -> list[str]:
        m, v, s = self.machine, self.versions, self.settings
        lines = [f"machine:  {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('platform', '?')}"]
        peaks = m.get("peak_gflops") or {}
        if peaks:
            parts = [f"{dtype} " + ", ".join(f"{g:.0f} GFLOP/s at {t} thread{'s' if int(t) > 1 else ''}"
                                             for t, g in by_threads.items())
                     for dtype, by_threads in peaks.items()]
            lines.append(f"FMA peak: {'; '.join(parts)} (measured: {m.get('peak_probe', '?')})")
        else:
            lines.append(f"FMA peak: not measured ({m.get('peak_probe') or 'no probe'})")
        lines.append("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
        if m.get("gemm_config"):
            lines.append(f"GEMM:     fastmlp {m['gemm_config']}")
        runs_on = [f"{p['label']}: {p['runs_on']}" for p in self.peers
                   if p["key"] != "fastmlp" and p.get("available") and p.get("runs_on")]
        for i, line in enumerate(runs_on):
            lines.append(("peers:    " if i == 0 else "          ") + line)
        lines.append(f"threads:  {', '.join(str(t) for t in s.get('threads', []))} for every implementation")
        lines.append(f"method:   each implementation in its own process; warm-up, then the median of "
                     f"{s.get('repeats')} blocks of at most ≈ {s.get('block_seconds')} s, round-robin, "
                     f"{s.get('pause')} s apart; ± is half the blocks' range; ÷ is fastmlp's speed ÷ the peer's "
                     "(above 1: fastmlp is faster)")
        noise = self.noise_line()
        if noise:
            lines.append(f"noise:    {noise}")
        return lines

    def noise_line(self) -> str | None:
        parts = [f"{100 * probe['stolen']:.1f} % at the {when}" for when, probe in self.noise.items() if probe]
        if not parts:
            return None
        return "time taken from a spinning thread on every core: " + ", ".join(parts)

    def footer_lines(self) -> list[str]:
        lines = []
        for p in self.peers:
            if not p.get("available"):
                lines.append(f"missing:  {p['label']} ({p.get('reason', 'not installed')}); to compare with it: "
                             f"{p['hint']}")
        for result in self.results:
            if result.error:
                lines.append(f"failed:   {self.label(result.peer)}, {result.config} at {result.threads} "
                             f"thread{'s' if result.threads > 1 else ''}: {result.error}")
        disturbed = sum(r.info.get("disturbed", 0) for r in self.results)
        if disturbed:
            lines.append(f"disturbed: {disturbed} block{'s' if disturbed > 1 else ''} kept although other processes "
                         f"took more than {100 * self.settings.get('max_taken', 0):.0f} % of the CPU in every attempt "
                         "(their figures are low)")
        reruns = sum(r.reruns for r in self.results)
        if reruns:
            lines.append(f"reruns:   {reruns} block{'s' if reruns > 1 else ''} run again because another process "
                         f"took more than {100 * self.settings.get('max_taken', 0):.0f} % of the CPU they needed")
        lines += [f"note:     {note}" for note in self.notes]
        for goal in self.goals:
            lines.append(f"goal:     {goal['text']}")
        if self.wall_seconds is not None:
            lines.append(f"wall time {self.wall_seconds:.0f} s")
        return lines

    def text(self) -> str:
        header, body = self.table()
        return "\n".join([*self.header_lines(), "", *format_table(header, body), "", *self.footer_lines()]) + "\n"

    def markdown(self) -> str:
        header, body = self.table()
        lines = ["### fastmlp bench", ""]
        if self.settings.get("command"):
            lines += [f"`{self.settings['command']}`", ""]
        # A header line that continues the one above (it starts with spaces) is nested under it.
        lines += [f"  - {line.strip()}" if line.startswith(" ") else f"- {line}" for line in self.header_lines()]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        footer = self.footer_lines()
        if footer:
            lines += [""] + [f"- {line}" for line in footer]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return _clean({"schema": SCHEMA, "machine": self.machine, "versions": self.versions, "settings": self.settings,
                "peers": self.peers, "noise": self.noise, "results": [r.to_json() for r in self.results],
                "ratios": self.comparisons(), "goals": self.goals, "notes": self.notes,
                "wall_seconds": self.wall_seconds})

    @classmethod
    def from_json(cls, document: dict) -> Report:
        """The report a ``--json`` file holds (``fastmlp bench --from-json PATH`` prints it again,
        or writes it as Markdown, without running anything)."""
        if not isinstance(document, dict) or document.get("schema") != SCHEMA:
            found = document.get("schema") if isinstance(document, dict) else type(document).__name__
            raise ValueError(f"not a fastmlp bench report (schema {SCHEMA} expected, found {found!r})")
        fields = set(Result.__dataclass_fields__)
        results = []
        try:
            for data in document.get("results", []):
                result = Result(**{k: v for k, v in data.items() if k in fields})
                result.rates = [float(r) for r in result.rates if r is not None]
                results.append(result)
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"a result of the report is incomplete or malformed ({error})") from None
        return cls(machine=document.get("machine", {}), versions=document.get("versions", {}),
                   settings=document.get("settings", {}), peers=document.get("peers", []), results=results,
                   noise=document.get("noise", {}), notes=document.get("notes", []),
                   goals=document.get("goals", []), wall_seconds=document.get("wall_seconds"))

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1, allow_nan=False)
            f.write("\n")

    def write_markdown(self, path: str) -> None:
        """Writes the Markdown to ``path``; when the file exists and holds the markers
        ``<!-- fastmlp bench: begin -->`` and ``<!-- fastmlp bench: end -->``, only the text
        between them is replaced (how benchmarks/RESULTS.md keeps its latest run). A file with one
        marker alone, or the two out of order, raises ValueError and is left as it was."""
        text = self.markdown()
        try:
            with open(path, encoding="utf-8") as f:
                old = f.read()
        except FileNotFoundError:
            old = ""
        problem = markers_problem(old)
        if problem is not None:
            raise ValueError(f"--markdown: {path} not written: {problem}")
        begin, end = old.find(MARK_BEGIN), old.find(MARK_END)
        if 0 <= begin < end:
            text = old[:begin + len(MARK_BEGIN)] + "\n" + text + old[end:]
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def display_unit(result: Result) -> str:
    return "µs per call" if result.group == "predict" else result.unit


def figure(result: Result) -> str:
    """A median in the table's units: samples (or steps) per second, µs per predict call, GFLOP/s."""
    value = result.median
    if result.group == "predict":
        return f"{1e6 / value:.1f}"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def cell(result: Result | None) -> str:
    if result is None:
        return "—"
    if result.error:
        return "failed"
    if not result.rates:
        return "—"
    spread = result.spread
    return figure(result) + (f" ±{100 * spread:.0f} %" if math.isfinite(spread) else "")


def ratio_text(comparison: Comparison) -> str:
    text = f"{comparison.ratio:.2f}×"
    return text + (f" ±{100 * comparison.spread:.0f} %" if math.isfinite(comparison.spread) else "")


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A plain-text table: columns padded to their widest cell, numbers and ratios right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    left = {0, 2}  # configuration and unit read left to right; figures line up on the right

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]

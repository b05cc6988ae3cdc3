"""Is a keystroke as cheap at word 200 as at word 10? The session's update cost against the length typed.

A session carries the recurrent state, so committing one more word should be
one model step whatever was typed before. This measures it: sessions with
10, 50 and 200 words typed, then, many times, one word added (timed: the
update) and the suggestion bar refreshed (timed with it: the keystroke), then
undone with backspace (not timed) so the length stays put. The lengths take
turns run by run, so a noisy neighbour slows them alike. Warm-up runs are
discarded.

    python -m benchmarks.keystroke_flatness artifacts/default --file model.int8.onnx --runs 2000

Prints a table (p50 and p90 per length, and each p50 over the shortest
length's) to stdout, chatter to stderr, and writes the figures and every
setting that moves them to --out as JSON. Flat means every length's p50 is
within --tolerance (20%) of every other's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class FlatnessConfig:
    bundle: str = "artifacts/default"
    model_file: str = "model.int8.onnx"
    backend: str = "auto"
    lengths: list[int] = field(default_factory=lambda: [10, 50, 200])  # words typed before the timed keystroke
    runs: int = 2_000  # timed keystrokes per length; p90 needs hundreds to settle
    warmup: int = 200  # keystrokes per length discarded first: caches, allocator, interpreter start-up
    k: int = 3  # suggestions per keystroke, as a keyboard's suggestion bar shows
    threads: int = 1  # interpreter intra-op threads; a keyboard shares the CPU with its app
    cpu: int = -1  # pin the process to this core (Linux); -1 = leave scheduling alone
    tolerance: float = 0.20  # flat: every p50 within this fraction of every other
    out: str = "out/keystroke_flatness.json"

    def validate(self) -> None:
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError(f"lengths must be positive word counts, got {self.lengths}")
        if self.runs < 10 or self.warmup < 0:
            raise ValueError(f"runs must be at least 10 and warmup at least 0, got {self.runs} and {self.warmup}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be a fraction between 0 and 1, got {self.tolerance}")


def typing_words(vocab, count: int, offset: int = 0) -> list[str]:
    """`count` common vocabulary words, cycled: a text a user could type, every word known to the model."""
    common = vocab.tokens[4 : 4 + 200] or ["<unk>"]
    return [common[(offset + i * 7) % len(common)] for i in range(count)]


def measure(config: FlatnessConfig) -> dict:
    """Time the update and the keystroke at each length; returns the report (see the module docstring)."""
    import edge_runtime

    config.validate()
    if config.cpu >= 0:
        os.sched_setaffinity(0, {config.cpu})
    model = edge_runtime.load(config.bundle, config.model_file, config.backend, threads=config.threads)
    sessions = {}
    for length in config.lengths:
        session = model.session()
        session.type(" ".join(typing_words(model.vocab, length)) + " ")
        sessions[length] = session
    next_words = typing_words(model.vocab, 50, offset=3)

    update_ns = {length: [] for length in config.lengths}
    keystroke_ns = {length: [] for length in config.lengths}
    print(f"timing {config.warmup} warm-up and {config.runs} runs per length: {config.lengths}", file=sys.stderr)
    gc.collect()
    gc.disable()  # a collection inside one timed call would be noise, not the session's cost
    try:
        for run in range(config.warmup + config.runs):
            word = next_words[run % len(next_words)]
            for length, session in sessions.items():
                start = time.perf_counter_ns()
                session.add_word(word)
                added = time.perf_counter_ns()
                session.suggest(config.k)
                done = time.perf_counter_ns()
                session.backspace()
                if run >= config.warmup:
                    update_ns[length].append(added - start)
                    keystroke_ns[length].append(done - start)
    finally:
        gc.enable()
    for length, session in sessions.items():
        assert len(session.words) == length, "the timed loop must leave each session at its length"

    return {
        "benchmark": "keystroke_flatness",
        "config": asdict(config),
        "runtime": {
            "backend": model.backend_name,
            "backend_version": model.backend_version,
            "model_file": model.model_file,
            "vocab_size": len(model.vocab),
            "model": model.manifest.model,
        },
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "update": _summarise(update_ns, config.tolerance),
        "keystroke": _summarise(keystroke_ns, config.tolerance),
    }


def _summarise(samples: dict[int, list[int]], tolerance: float) -> dict:
    per_length = {}
    for length, ns in samples.items():
        ms = np.array(ns, dtype=np.float64) / 1e6
        per_length[str(length)] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()),
            "runs": len(ms),
        }
    p50 = [v["p50_ms"] for v in per_length.values()]
    first = p50[0]
    spread = max(p50) / min(p50) - 1
    return {
        "lengths": per_length,
        "p50_ratio_to_shortest": {k: v["p50_ms"] / first for k, v in per_length.items()},
        "p50_spread": spread,  # largest p50 over smallest, minus one
        "flat": spread <= tolerance,
    }


def table(report: dict) -> str:
    lines = [
        f"{report['runtime']['model_file']} on {report['runtime']['backend']} {report['runtime']['backend_version']}, "
        f"{report['config']['threads']} thread(s), {report['config']['runs']} runs per length",
        f"{'words typed':>12} {'update p50':>11} {'p90':>8} {'ratio':>6} {'keystroke p50':>14} {'p90':>8} {'ratio':>6}",
    ]
    update, keystroke = report["update"], report["keystroke"]
    for length in update["lengths"]:
        u, k = update["lengths"][length], keystroke["lengths"][length]
        lines.append(
            f"{length:>12} {u['p50_ms']:>9.3f}ms {u['p90_ms']:>6.3f}ms {update['p50_ratio_to_shortest'][length]:>6.2f} "
            f"{k['p50_ms']:>12.3f}ms {k['p90_ms']:>6.3f}ms {keystroke['p50_ratio_to_shortest'][length]:>6.2f}"
        )
    tolerance = report["config"]["tolerance"]
    for name in ("update", "keystroke"):
        verdict = "flat" if report[name]["flat"] else "NOT flat"
        lines.append(f"{name}: p50 spread {report[name]['p50_spread']:.1%} ({verdict}; tolerance {tolerance:.0%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    defaults = FlatnessConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=defaults.bundle)
    parser.add_argument("--file", dest="model_file", default=defaults.model_file)
    parser.add_argument("--backend", default=defaults.backend)
    parser.add_argument("--lengths", type=int, nargs="+", default=defaults.lengths)
    parser.add_argument("--runs", type=int, default=defaults.runs)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--cpu", type=int, default=defaults.cpu)
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance)
    parser.add_argument("--out", default=defaults.out)
    config = FlatnessConfig(**vars(parser.parse_args(argv)))
    try:
        report = measure(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(report))
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0 if report["update"]["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())

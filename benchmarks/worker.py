"""Measure one model in this process and write its figures as JSON.

    python -m benchmarks.worker SPEC.json RESULT.json

The parent (benchmarks.targets) starts one worker per (model, target), so a
model's peak memory is its own: nothing else was ever loaded into this
process. The worker imports the standard library here and, through
benchmarks.runners, only what its model needs, so it runs under an emulated
arm64 Python with numpy and one interpreter.

SPEC holds the model (see benchmarks.runners.open_runner), the thread
count, the CPUs to pin this process to, the prompts ({"prefix": [words], "m": words to complete}) and the
repetition counts. RESULT gets raw latencies in milliseconds; percentiles
are the parent's job, so every record is summarised the same way.

The workload, in the benchmark protocol's terms:

- load: from nothing to a model ready to step (files read, graph built);
- first token: a fresh text, the whole prefix fed, the top-k next words ranked;
- per token: one model step with the state (or key-value cache) carried;
  the prefix and target tokens of every prompt, `repeats` times, the first
  `warmup_steps` discarded;
- completion: prefix fed, then m words generated greedily;
- keystroke: one character typed into a session that holds the text so far,
  then the top-k suggestions refreshed. Most keystrokes fall inside a word
  (a prefix filter); a space commits a word (a model step), so the p90 and
  p99 of this figure are where the model shows.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

STATUS_OK = "ok"
STATUS_NO_FIT = "does-not-fit"
STATUS_ERROR = "error"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process, in bytes.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec,
    so a worker started by fork from a parent holding 800 MB would report
    800 MB however small its model. VmHWM belongs to the address space
    created at exec and so counts this process alone.
    """
    value = _proc_status_kib("VmHWM")
    if value is not None:
        return value * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS reports bytes, Linux KiB


def current_rss_bytes() -> int | None:
    value = _proc_status_kib("VmRSS")
    return None if value is None else value * 1024


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it (x86 `model name`, ARM `Model` or implementer and part)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return platform.processor() or "unknown"
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    for key in ("model name", "Model", "Hardware"):
        if fields.get(key):
            return fields[key]
    if "CPU part" in fields:
        return f"ARM implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or "unknown"


def _ms_since(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1e6


def time_calls(fn, args_list: list, warmup: int) -> tuple[list[float], list]:
    """Call fn(*args) for each args in `args_list`; the first `warmup` calls run but are not timed."""
    for args in args_list[:warmup]:
        fn(*args)
    times, results = [], []
    for args in args_list:
        start = time.perf_counter_ns()
        results.append(fn(*args))
        times.append(_ms_since(start))
    return times, results


def per_token_ms(runner, prompts: list[dict], repeats: int, warmup_steps: int) -> tuple[list[float], float]:
    """Latency of each model step over every prompt's tokens; also the tokens per word."""
    times: list[float] = []
    tokens = words = 0
    for _ in range(repeats):
        for prompt in prompts:
            text_words = prompt["prefix"] + prompt.get("target", [])
            ids = runner.token_ids(text_words)
            tokens, words = tokens + len(ids), words + len(text_words)
            state = runner.initial()
            for token_id in ids:
                start = time.perf_counter_ns()
                _, state = runner.step(token_id, state)
                times.append(_ms_since(start))
    return times[warmup_steps:], tokens / max(words, 1)


def keystroke_ms(runner, prompts: list[dict], k: int) -> list[float]:
    """Latency of one typed character plus refreshed suggestions, over every prompt's prefix."""

    def type_text(text: str, timed: list[float] | None) -> None:
        session = runner.session()
        for char in text:
            start = time.perf_counter_ns()
            session.type(char)
            session.suggest(k)
            if timed is not None:
                timed.append(_ms_since(start))

    times: list[float] = []
    type_text(" ".join(prompts[0]["prefix"]) + " ", None)  # warm-up
    for prompt in prompts:
        type_text(" ".join(prompt["prefix"]) + " ", times)
    return times


def measure(spec: dict) -> dict:
    """Run the whole workload on the model of `spec`; the result dict the parent reads."""
    from benchmarks.runners import import_runtime, open_runner

    prompts, k, warmup = spec["prompts"], spec.get("k", 3), spec.get("warmup_calls", 2)
    result = {"python": platform.python_version(), "machine": platform.machine(), "cpu_model": cpu_model()}
    # What the parent applied, as this process sees it.
    result["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    result["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    result["rss_start_bytes"] = current_rss_bytes()
    # The interpreter's own footprint: its packages imported, no model loaded yet.
    result["runtime_modules"] = import_runtime(spec["model"])
    result["rss_runtime_bytes"] = current_rss_bytes()

    # Load: from files on disk to a runner that can step.
    start = time.perf_counter_ns()
    runner = open_runner(spec["model"], threads=spec["threads"])
    result["load_ms"] = _ms_since(start)
    result.update(runtime=runner.runtime, runtime_version=runner.runtime_version, weights=runner.weights)

    # First token: a fresh text, prefix fed, top-k ranked.
    calls = [(p["prefix"], k) for p in prompts]
    result["first_token_ms"], suggestions = time_calls(runner.suggest, calls, warmup)

    result["token_ms"], result["tokens_per_word"] = per_token_ms(
        runner, prompts, spec.get("repeats", 3), spec.get("warmup_steps", 20)
    )

    calls = [(p["prefix"], p["m"]) for p in prompts]
    result["completion_ms"], completions = time_calls(runner.complete, calls, warmup)
    result["keystroke_ms"] = keystroke_ms(runner, prompts, k)

    result["samples"] = [
        {"prefix": " ".join(p["prefix"]), "suggestions": s, "completion": c}
        for p, s, c in zip(prompts, suggestions, completions)
    ]
    result["peak_rss_bytes"] = peak_rss_bytes()
    if result["rss_runtime_bytes"] is not None:
        result["model_rss_bytes"] = result["peak_rss_bytes"] - result["rss_runtime_bytes"]
    result["status"] = STATUS_OK
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m benchmarks.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    # Pinned before any import, so every thread numpy or the interpreter starts inherits the mask.
    if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    try:
        result = measure(spec)
    except MemoryError:
        # Under a memory cap an allocation can fail before the watchdog sees it.
        result = {"status": STATUS_NO_FIT, "error": "MemoryError", "peak_rss_bytes": peak_rss_bytes()}
    except Exception as e:  # reported as the record's status; the parent carries on with the next model
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        result = {"status": STATUS_ERROR, "error": f"{type(e).__name__}: {first_line}"}
    result["pid"] = os.getpid()
    tmp = argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, argv[2])
    return 0 if result["status"] == STATUS_OK else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The benchmark report: bench.json, bench.md, PNG charts, and a summary table on stdout.

bench.json is the list of records, one per (model, target), each holding
every setting that moves its numbers. bench.md is the same figures as
tables, with the headline ratios and the caveats that go with them. The
charts are drawn with matplotlib's Agg backend (no display needed), on a log
scale where the values span more than a factor of 20.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from benchmarks.worker import STATUS_OK

log = logging.getLogger("edgecomplete.bench")

MIB = 2**20
CHARTS = {
    "size": ("chart-size.png", "size_bytes", "File size on disk (MiB)", MIB),
    "memory": ("chart-memory.png", "peak_rss_bytes", "Peak resident memory (MiB)", MIB),
    "token": ("chart-token-latency.png", "token_ms_p50", "Per-token latency p50 (ms); bars to p90", 1),
}
HEADLINE_BASELINE = ("distilgpt2", "model.int8.onnx")


def label(record: dict) -> str:
    return f"{record['model']} {record['file']}"


def write_report(records: list[dict], out: Path, config, prompt_note: dict) -> None:
    (out / "bench.json").write_text(json.dumps(records, indent=2) + "\n")
    charts = draw_charts(records, out) if config.charts else []
    (out / "bench.md").write_text(markdown(records, prompt_note, charts))
    click.echo(summary_table(records))
    for line in headlines(records):
        click.echo(line)
    log.info("report: %s", out / "bench.md")


def _mib(value) -> str:
    if value is None:
        return ""
    return f"{value / MIB:.1f}" if value >= MIB else f"{value / MIB:.3f}"


def _ms(value) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


COLUMNS = (
    ("model", lambda r: r["model"]),
    ("file", lambda r: r["file"]),
    ("runtime", lambda r: f"{r['runtime'] or ''} {r['runtime_version'] or ''}".strip()),
    ("target", lambda r: r["target"]),
    ("threads", lambda r: str(r["threads"])),
    ("size MiB", lambda r: _mib(r["size_bytes"])),
    ("peak RSS MiB", lambda r: _mib(r["peak_rss_bytes"])),
    ("model RSS MiB", lambda r: _mib(r.get("model_rss_bytes"))),
    ("load ms", lambda r: _ms(r["load_ms"])),
    ("first token ms", lambda r: _ms(r["first_token_ms_p50"])),
    ("token p50 ms", lambda r: _ms(r["token_ms_p50"])),
    ("token p90 ms", lambda r: _ms(r["token_ms_p90"])),
    ("token p99 ms", lambda r: _ms(r["token_ms_p99"])),
    ("completion p50 ms", lambda r: _ms(r["completion_ms_p50"])),
    ("keystroke p50 ms", lambda r: _ms(r["keystroke_ms_p50"])),
    ("keystroke p99 ms", lambda r: _ms(r["keystroke_ms_p99"])),
    ("status", lambda r: r["status"] if r["status"] == STATUS_OK else f"{r['status']}: {r.get('error') or ''}"),
)


def rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    return [name for name, _ in COLUMNS], [[cell(r) for _, cell in COLUMNS] for r in records]


def summary_table(records: list[dict]) -> str:
    header, body = rows(records)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def headlines(records: list[dict]) -> list[str]:
    """Per target and int8 word-model file: how it compares with DistilGPT2's int8 ONNX with its cache."""
    lines = []
    ok = [r for r in records if r["status"] == STATUS_OK]
    for target in dict.fromkeys(r["target"] for r in ok):
        here = [r for r in ok if r["target"] == target]
        baseline = next((r for r in here if (r["model"], r["file"]) == HEADLINE_BASELINE), None)
        if baseline is None:
            continue
        for ours in (r for r in here if ".int8." in r["file"] and r["model"] != "distilgpt2"):
            line = (
                f"{target}: {label(ours)} against {label(baseline)}: per-token p50 "
                f"{baseline['token_ms_p50'] / ours['token_ms_p50']:.0f}x lower, peak RSS "
                f"{baseline['peak_rss_bytes'] / ours['peak_rss_bytes']:.1f}x lower"
            )
            if ours.get("model_rss_bytes") and baseline.get("model_rss_bytes"):
                line += f" ({baseline['model_rss_bytes'] / ours['model_rss_bytes']:.1f}x above the interpreter's own)"
            lines.append(line + f", file {baseline['size_bytes'] / ours['size_bytes']:.0f}x smaller")
    return lines


def markdown(records: list[dict], prompt_note: dict, charts: list[Path]) -> str:
    header, body = rows(records)
    parts = ["# Benchmark report", ""]
    if records:
        first = records[0]
        parts += [
            f"Host CPU: {first['host_cpu_model']}. Prompts: {prompt_note.get('count')} "
            f"{prompt_note.get('split')}-split texts of {prompt_note.get('words')} words (the median) "
            f"from `{Path(str(prompt_note.get('source'))).name}`. "
            f"Workload per model: {json.dumps(first['workload'])}.",
            "",
        ]
    lines = headlines(records)
    if lines:
        parts += ["## Headline", "", *(f"- {line}" for line in lines), ""]
    parts += ["## Figures", "", markdown_table(header, body), ""]
    parts += [
        "Latencies are milliseconds on the target named; p50/p90/p99 are over every timed call after warm-up. "
        "Peak RSS is the worker process's own high-water mark (VmHWM): one process per model and target. "
        "Model RSS is that peak less the process's resident memory once its packages were imported "
        "(Python, numpy and the interpreter: about 45 MiB with onnxruntime), which every model pays alike. "
        "Profiles (`pi4`, `pi-zero-2w`) apply a board's threads and memory cap on this machine's CPU: "
        "their latencies are not a board's.",
        "",
    ]
    if any(r["emulated"] for r in records):
        parts += [
            "**Emulated figures** (`emulated-aarch64`) come from qemu user-mode emulation of a Cortex-A72. "
            "Emulation is 150 to 500 times slower than native, by a factor that varies by operation: compare "
            "models with them, never read them as board latency. Peak RSS there includes the emulator.",
            "",
        ]
        parity = [r for r in records if r["emulated"] and "suggestions_match_native" in r]
        if parity:
            parts += ["| model | file | suggestions and completions equal native's |", "|---|---|---|"]
            parts += [f"| {r['model']} | {r['file']} | {r['suggestions_match_native']} |" for r in parity]
            parts += [""]
    parts += quality_section(records)
    parts += [f"![{chart.stem}]({chart.name})" for chart in charts] + [""]
    parts += samples_section(records)
    parts += settings_section(records)
    return "\n".join(parts) + "\n"


def quality_section(records: list[dict]) -> list[str]:
    seen, body = set(), []
    for r in records:
        key = (r["model"], r["file"])
        if key in seen:
            continue
        seen.add(key)
        q = r.get("quality") or {}

        def fmt(name, q=q):
            return f"{q[name]:.4f}" if name in q else ""

        note = r.get("quality_note") or ("" if q else "not scored")
        row = [r["model"], r["file"], r["weights"], str(q.get("n", "")), fmt("rouge1"), fmt("rouge2"), fmt("top1")]
        body.append([*row, fmt("top3"), fmt("keystroke_savings"), note])
    header = ["model", "file", "weights", "texts", "ROUGE-1", "ROUGE-2", "top-1", "top-3", "keystrokes saved", "note"]
    return ["## Quality (`eval`, test split)", "", markdown_table(header, body), ""]


def samples_section(records: list[dict], count: int = 3) -> list[str]:
    native = [r for r in records if r["target"] == "native" and r["status"] == STATUS_OK and r["samples"]]
    if not native or "prefix" not in native[0]["samples"][0]:  # prompts not quoted
        return []
    lines = ["## Completions (native, greedy)", ""]
    for r in native:
        lines.append(f"- **{label(r)}**:")
        for s in r["samples"][:count]:
            lines.append(f"  - {s['prefix']} → *{' '.join(s['completion'])}* (next: {', '.join(s['suggestions'])})")
    return [*lines, ""]


def settings_section(records: list[dict]) -> list[str]:
    header = ["model", "file", "target", "cpus", "memory cap MiB", "machine", "cpu", "python", "weights"]
    body = [
        [
            r["model"],
            r["file"],
            r["target"],
            ",".join(map(str, r.get("cpus") or [])),
            _mib(r.get("memory_cap_bytes")),
            str(r.get("machine")),
            str(r.get("cpu_model")),
            str(r.get("python")),
            r["weights"],
        ]
        for r in records
    ]
    return ["## Settings", "", markdown_table(header, body), ""]


def draw_charts(records: list[dict], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no charts (pip install matplotlib)")
        return []
    ok = [r for r in records if r["status"] == STATUS_OK]
    if not ok:
        return []
    paths = []
    for key, (name, field, title, scale) in CHARTS.items():
        path = out / name
        if key == "size":
            _bar_chart(plt, _unique_models(ok), [None], field, title, scale, path)
        else:
            targets = list(dict.fromkeys(r["target"] for r in ok))
            _bar_chart(plt, ok, targets, field, title, scale, path)
        paths.append(path)
    return paths


def _unique_models(records: list[dict]) -> list[dict]:
    seen: dict[tuple, dict] = {}
    for r in records:
        seen.setdefault((r["model"], r["file"]), r)
    return list(seen.values())


def _bar_chart(plt, records, targets, field, title, scale, path: Path) -> None:
    """Horizontal bars: one row per model file, one bar per target within it."""
    models = list(dict.fromkeys(label(r) for r in records))
    height = 0.8 / len(targets)
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.45 * len(models) * max(1, len(targets) * 0.7)))
    values = []
    for j, target in enumerate(targets):
        ys, xs, errors = [], [], []
        for i, model in enumerate(models):
            match = [r for r in records if label(r) == model and (target is None or r["target"] == target)]
            if not match or match[0][field] is None:
                continue
            r = match[0]
            ys.append(i + (j - (len(targets) - 1) / 2) * height)
            xs.append(r[field] / scale)
            upper = r.get("token_ms_p90") if field == "token_ms_p50" else None
            errors.append(0 if upper is None else upper - r[field])
        values += xs
        bars = ax.barh(ys, xs, height=height, label=target, xerr=errors if any(errors) else None, capsize=2)
        ax.bar_label(bars, labels=[_short(x) for x in xs], padding=3, fontsize=7)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(title)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
        ax.set_xlabel(title + ", log scale")
    if targets != [None]:
        # Above the axes: inside, it covers the longest bars' labels.
        ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(targets), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"

"""The experiments table: model variants exported, scored and timed under one protocol, side by side.

    python -m benchmarks.experiments --out artifacts/experiments

A row is a train config whose run has finished (`edgecomplete train
--config C` writes model.pt into the config's out_dir). For each row, what
is missing is made and kept in the run folder, so a rerun only adds what is
new:

1. the bundle: `edgecomplete export --quantize` into <out_dir>/bundle;
2. its quality: the protocol (training.evaluate) on the Sentiment140 test
   split, greedy, with the bundle's model.int8.onnx, as the runtime loads
   it by default: <out_dir>/bundle/eval-int8-onnx-test.json.

Latency is measured in this run for every row, the rows taking turns with
the same prompts for three rounds, the median kept (benchmarks.bench's
workers, one process each): per-token p50
of model.int8.onnx and model.int8.tflite natively on one thread, and of
model.int8.tflite under emulated aarch64 when that target is set up
(python -m benchmarks.setup_aarch64).

The shipped bundle is a row of its own, scored by its saved test report,
and the n-gram baseline and the published anchors sit in the same table
with their sources. Writes experiments.json, experiments.md and
chart-quality-size.png.

A row of the table already in --out whose run folder is gone (run folders
are not kept in the repository) is carried over as it was recorded, marked
as measured in an earlier run: its quality figures do not depend on the
run, but its latency was timed beside other rows than this run's. Rows of
an earlier shipped model are carried as "previously shipped".
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import UserError

log = logging.getLogger("edgecomplete.experiments")

CONFIGS = "configs/experiments"
EVAL_FILE = "eval-int8-onnx-test.json"
# The shipped model's runs, each starting from the one before (README, "The shipped model").
SHIPPED_CONFIGS = " -> ".join(
    f"configs/{name}.json"
    for name in ("lstm256", "lstm256-finetune-s140", "lstm256-continue", "lstm256-continue-finetune-s140")
)
QUALITY_FILE = "model.int8.onnx"
LATENCY = [("native", "model.int8.onnx"), ("native", "model.int8.tflite"), ("emulated-aarch64", "model.int8.tflite")]
FIGURES = ("rouge1", "rouge2", "rougeL", "top1", "top3", "keystroke_savings")

# Published results, as their papers report them; None where a paper does not.
ANCHORS = [
    {
        "name": "study's LSTM",
        "source": "the study this toolkit follows: 50 samples, generated from the last prefix word only",
        "parameters": 4_800_000,
        "size_mb": 18.2,
        "rouge1": 0.0444,
        "rouge2": 0.0100,
    },
    {
        "name": "study's DistilGPT2",
        "source": "the same study, pretrained DistilGPT2 without fine-tuning",
        "parameters": 82_000_000,
        "size_mb": 312.8,
        "rouge1": 0.0331,
        "rouge2": 0.0034,
    },
    {
        "name": "best published LSTM, all 1.6M Sentiment140 tweets",
        "source": "the study's survey of tweet completion",
        "rouge1": 0.107,
        "rouge2": 0.022,
    },
    {
        "name": "Gboard CIFG LSTM",
        "source": "Hard et al., 2018, Federated Learning for Mobile Keyboard Prediction; on Gboard's own data",
        "parameters": 1_400_000,
        "top3": 0.271,
    },
]


@dataclass
class Row:
    name: str
    config: str  # the config file(s) that reproduce it
    bundle: Path
    quality: dict = field(default_factory=dict)
    parameters: int | None = None
    sizes: dict = field(default_factory=dict)  # model file -> bytes
    latency: dict = field(default_factory=dict)  # "target file" -> per-token p50 ms
    note: str = ""


SHIPPED_GREEDY = "shipped, greedy"  # the shipped row the variants, and the latency ratios, refer to
CARRIED = "carried over: figures and latency as measured in an earlier run of this table"
PREVIOUSLY_SHIPPED = "previously shipped"


def carried_records(earlier: Path, present: set[str], shipped_config: str) -> list[dict]:
    """Records of the table in `earlier` to keep: variants whose run is gone, and an earlier shipped model's rows.

    `present` holds the configs that have rows in this run; rows of the
    current shipped model are made afresh from its reports.
    """
    if not earlier.is_file():
        return []
    try:
        records = json.loads(earlier.read_text(encoding="utf-8"))["rows"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise UserError(f"{earlier} is not an experiments table ({e}); move it away to start a new one") from None
    # The shipped model's greedy row of that table: the reference its rows were timed beside.
    reference = next((r["latency_p50_ms"] for r in records if r["name"] == SHIPPED_GREEDY), {})
    kept = []
    for record in records:
        if record["config"] in present or record["config"] == shipped_config:
            continue
        record = dict(record)
        record.setdefault("latency_vs_shipped", relative_latency(record["latency_p50_ms"], reference))
        if record["name"].startswith("shipped,"):
            record["name"] = PREVIOUSLY_SHIPPED + record["name"].removeprefix("shipped")
        if not record.get("note", "").startswith(CARRIED):
            record["note"] = CARRIED + (f" ({record['note']})" if record.get("note") else "")
        kept.append(record)
    return kept


def config_rows(config_paths: list[Path], data: str) -> list[Row]:
    """A row for each config whose run has a model.pt; the others are named in the log and left out."""
    from training.config import load_config

    rows = []
    for path in config_paths:
        if not path.is_file():
            raise UserError(f"no config file {path}")
        config = load_config(path)
        run = Path(config.out_dir)
        if not (run / "model.pt").is_file():
            log.warning("%s: %s has no model.pt yet (edgecomplete train --config %s); not in the table", path.stem,
                        run, path)  # fmt: skip
            continue
        bundle = run / "bundle"
        if not (bundle / "manifest.json").is_file():
            export(run, bundle, data)
        rows.append(Row(path.stem, str(path), bundle, quality=quality_on_test_split(bundle, data)))
    return rows


def export(run: Path, bundle: Path, data: str) -> None:
    from export.bundle import export_bundle
    from export.config import ExportConfig

    log.info("exporting %s into %s", run, bundle)
    export_bundle(run, bundle, ExportConfig(quantize=True, data=data, force=True))


def quality_on_test_split(bundle: Path, data: str) -> dict:
    """The bundle's test-split report for model.int8.onnx, scored now if it has none."""
    from training.evaluate import evaluate_path

    path = bundle / EVAL_FILE
    if not path.is_file():
        log.info("scoring %s %s on the test split", bundle, QUALITY_FILE)
        report = evaluate_path(bundle, data, split="test", model_file=QUALITY_FILE)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def shipped_rows(bundle: Path, config: str) -> list[Row]:
    """The shipped bundle, a row per decoding it has a test-split report of for model.int8.onnx."""
    rows = []
    for path in sorted(bundle.glob("eval*int8-onnx*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        if report.get("split") != "test" or report.get("model", {}).get("file") != QUALITY_FILE:
            continue
        rows.append(Row(f"shipped, {decoding_name(report)}", config, bundle, quality=report, note=path.name))
    if not rows:
        raise UserError(f"{bundle} has no test-split report of {QUALITY_FILE}: run edgecomplete eval --split test")
    # Greedy first: the row the variants compare with.
    return sorted(rows, key=lambda r: r.name != SHIPPED_GREEDY)


def decoding_name(report: dict) -> str:
    if report.get("mbr"):
        m = report["mbr"]
        return f"MBR {m['samples']} samples, T {m['temperature']}, bigram weight {m['bigram_weight']}"
    width = report.get("beam_width") or 1
    return "greedy" if width == 1 else f"beam {width}"


def describe(row: Row) -> None:
    """Parameters and int8 file sizes from the bundle's manifest."""
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(row.bundle)
    row.parameters = manifest.model.get("parameters")
    for name in ("model.int8.onnx", "model.int8.tflite"):
        row.sizes[name] = manifest.verify_file(manifest.file(name)).stat().st_size


def measure_latency(rows: list[Row], out: Path, emulated: bool, rounds: int = 3) -> None:
    """Per-token p50 of each row's int8 files, every row in this one run with the same prompts.

    The rows take turns, a process each, `rounds` times over; a row's figure
    is the median of its rounds, so a burst of load on a shared machine
    lands on every row alike or on one round only.
    """
    from benchmarks.bench import ModelEntry, _emulator, _prompts, measure
    from benchmarks.config import BenchConfig
    from benchmarks.targets import target

    pairs = [(t, f) for t, f in LATENCY if emulated or t != "emulated-aarch64"]
    config = BenchConfig(bundle=str(rows[0].bundle), out_dir=str(out), targets=sorted({t for t, _ in pairs}),
                         distilgpt2=False, eval_texts=0, charts=False, quote_prompts=False)  # fmt: skip
    prompts, _ = _prompts(config)
    emulator = _emulator(config) if emulated else None
    workers = out / "workers"
    turns = []  # (row, target, entry), in the order of one round
    for t, file in pairs:
        for row in rows:
            spec = {"kind": "bundle", "bundle": str(row.bundle), "file": file, "backend": "auto"}
            turns.append((row, t, ModelEntry(row.name, file, "int8", spec, row.sizes[file], True)))
    p50s: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for row, t, entry in turns:
            record = measure(entry, target(t), prompts, config, workers / row.name, emulator)
            if record["status"] != "ok":
                raise UserError(f"{row.name} {entry.file} on {t}: {record['status']} ({record.get('error')})")
            p50s.setdefault((row.name, f"{t} {entry.file}"), []).append(record["token_ms_p50"])
    for row, t, entry in turns:
        key = f"{t} {entry.file}"
        row.latency[key] = statistics.median(p50s[row.name, key])
    shutil.rmtree(workers, ignore_errors=True)  # the workers' files quote the prompts


def ngram_row(report_path: Path, model_path: Path | None) -> dict:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    row = {"name": "trigram, stupid backoff", "config": "edgecomplete ngram --order 3 --out runs/trigram",
           **{k: report[k] for k in FIGURES}}  # fmt: skip
    if model_path is not None and model_path.is_file():
        row["size_mb"] = model_path.stat().st_size / 1e6
    return row


def relative_latency(latency: dict, reference: dict) -> dict:
    """Each per-token p50 over the shipped model's, measured in the same run: comparable across runs and machines."""
    return {key: ms / reference[key] for key, ms in latency.items() if reference.get(key)}


def write_table(rows: list[Row], shipped: list[Row], carried: list[dict], ngram: dict | None, out: Path) -> None:
    records = [row_record(r, shipped[0].latency) for r in [*shipped, *rows]] + carried
    data = {"rows": records, "ngram": ngram, "anchors": ANCHORS, "latency": [f"{t} {f}" for t, f in LATENCY]}
    (out / "experiments.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "experiments.md").write_text(markdown(records, ngram), encoding="utf-8")
    chart(records, ngram, out / "chart-quality-size.png")


def row_record(row: Row, reference: dict) -> dict:
    return {
        "name": row.name,
        "config": row.config,
        "parameters": row.parameters,
        "int8_onnx_mb": row.sizes["model.int8.onnx"] / 1e6,
        "int8_tflite_mb": row.sizes["model.int8.tflite"] / 1e6,
        **{k: row.quality[k] for k in FIGURES},
        "perplexity": row.quality.get("perplexity"),
        "n": row.quality["n"],
        "latency_p50_ms": row.latency,
        "latency_vs_shipped": relative_latency(row.latency, reference),
        "note": row.note,
    }


def _f(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(records: list[dict], ngram: dict | None) -> str:
    header = (
        "| model | parameters | int8 MB (ONNX / TFLite) | ROUGE-1 | ROUGE-2 | ROUGE-L | top-1 | top-3 | "
        "keystrokes saved | ms/token native (ONNX / TFLite) | ms/token emulated aarch64 (TFLite) | "
        "ms/token over the shipped model's, same run (native TFLite / emulated) |"
    )
    lines = [header, "|" + "---|" * 12]
    for r in records:
        lat, rel = r["latency_p50_ms"], r.get("latency_vs_shipped", {})
        mark = " \u2020" if r.get("note", "").startswith(CARRIED) else ""
        lines.append(
            f"| {r['name']}{mark} | {r['parameters'] / 1e6:.2f}M | "
            f"{r['int8_onnx_mb']:.2f} / {r['int8_tflite_mb']:.2f} | "
            + " | ".join(_f(r[k]) for k in FIGURES[:5])
            + f" | {r['keystroke_savings']:.3f} | {_f(lat.get('native model.int8.onnx'), 3)} / "
            f"{_f(lat.get('native model.int8.tflite'), 3)} | {_f(lat.get('emulated-aarch64 model.int8.tflite'), 2)} | "
            f"{_f(rel.get('native model.int8.tflite'), 2)} / {_f(rel.get('emulated-aarch64 model.int8.tflite'), 2)} |"
        )
    if ngram:
        size = f"{ngram['size_mb']:.1f} (pickled tables)" if "size_mb" in ngram else "—"
        lines.append(f"| {ngram['name']} | — | {size} | " + " | ".join(_f(ngram[k]) for k in FIGURES[:5])
                     + f" | {ngram['keystroke_savings']:.3f} | — | — | — |")  # fmt: skip
    for a in ANCHORS:
        params = f"{a['parameters'] / 1e6:.1f}M" if "parameters" in a else "—"
        size = f"{a['size_mb']} (fp32)" if "size_mb" in a else "—"
        figures = " | ".join(_f(a.get(k), 4 if k != "top3" else 3) for k in FIGURES[:5])
        lines.append(f"| {a['name']} ({a['source']}) | {params} | {size} | {figures} | — | — | — | — |")
    sources = "\n".join(f"- `{r['name']}`: `{r['config']}`" for r in records)
    return (
        "# Experiments\n\n"
        "Every model row: the quality protocol on the Sentiment140 test split "
        f"({records[0]['n']} texts), greedy completions, the bundle's `model.int8.onnx`; per-token p50 of the int8 "
        "files measured in one run with the same prompts, the rows taking turns for several rounds, the median "
        "kept. \u2020: carried over from an earlier "
        "run of this table, whose run folder is gone; its latency was measured beside that run's rows, perhaps on "
        "another machine: compare it through the last column, each row's latency over the shipped model's in the "
        "run that timed it.\n\n" + "\n".join(lines) + "\n\n"
        "Configs:\n\n" + sources + "\n"
    )


def chart(records: list[dict], ngram: dict | None, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, figure, label in ((axes[0], "rouge1", "ROUGE-1"), (axes[1], "top3", "next-word top-3 accuracy")):
        shown = set()
        for r in records:
            # Decoding rows share their model's next-word figures: one point for them.
            if (r["parameters"], r[figure]) in shown:
                continue
            shown.add((r["parameters"], r[figure]))
            shipped = r["name"].startswith("shipped")
            ax.scatter(r["parameters"], r[figure], color="tab:orange" if shipped else "tab:blue")
            ax.annotate(r["name"], (r["parameters"], r[figure]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        lines = [(a["name"], a.get(figure), "tab:gray", "--") for a in ANCHORS if a.get("parameters") is None]
        if ngram is not None:
            lines.append((ngram["name"], ngram[figure], "tab:green", ":"))
        for name, value, color, style in lines:
            if value is None:
                continue
            ax.axhline(value, color=color, linestyle=style, linewidth=0.8)
            ax.text(0.99, value, name, transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=7,
                    color=color)  # fmt: skip
        for a in ANCHORS:
            if a.get(figure) is not None and a.get("parameters") is not None:
                ax.scatter(a["parameters"], a[figure], color="tab:red", marker="s")
                ax.annotate(a["name"], (a["parameters"], a[figure]), fontsize=7, xytext=(3, -10),
                            textcoords="offset points", color="tab:red")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("parameters (int8 bytes are about one per parameter)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("Quality against size, Sentiment140 test split (anchors: as published)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from training.corpus import data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help=f"train configs; default: every {CONFIGS}/*.json")
    parser.add_argument("--shipped", default="artifacts/default", help="the shipped bundle, scored by its reports")
    parser.add_argument("--shipped-config", default=SHIPPED_CONFIGS, help="the configs that trained it, in order")
    parser.add_argument("--ngram-report", default="artifacts/baselines/trigram-stupid-backoff.eval.json")
    parser.add_argument("--ngram-model", help="the n-gram's ngram.pkl.gz, for its size")
    parser.add_argument("--data", default=str(data_root() / "sentiment140" / "tweets.txt"))
    parser.add_argument("--no-emulated", action="store_true", help="skip the emulated-aarch64 latency")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds, rows taking turns; the median counts")
    parser.add_argument("--out", default="artifacts/experiments")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    try:
        paths = [Path(p) for p in args.configs] or sorted(Path(CONFIGS).glob("*.json"))
        rows = config_rows(paths, args.data)
        shipped = shipped_rows(Path(args.shipped), args.shipped_config)
        out = Path(args.out)
        present = {row.config for row in rows}
        carried = carried_records(out / "experiments.json", present, args.shipped_config)
        for row in [*shipped, *rows]:
            describe(row)
        out.mkdir(parents=True, exist_ok=True)
        measure_latency([shipped[0], *rows], out, emulated=not args.no_emulated, rounds=args.rounds)
        for row in shipped[1:]:
            row.latency = shipped[0].latency  # one model: decoding changes the steps taken, not a step's cost
        ngram_path = Path(args.ngram_model) if args.ngram_model else None
        ngram = ngram_row(Path(args.ngram_report), ngram_path) if Path(args.ngram_report).is_file() else None
        write_table(rows, shipped, carried, ngram, out)
    except (UserError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "experiments.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

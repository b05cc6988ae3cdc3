"""`edgecomplete bench`: every model on every target, by the benchmark protocol.

    from benchmarks.bench import run_bench
    from benchmarks.config import BenchConfig
    records = run_bench(BenchConfig(bundle="artifacts/default", targets=["native", "pi4"]))

Models: each model file of the bundle (through edge_runtime), the PyTorch
checkpoint, and DistilGPT2 in PyTorch and as int8 ONNX with its cache. Each
(model, target) pair runs in its own worker process (benchmarks.worker)
under the target's limits (benchmarks.targets); the parent only plans,
launches and summarises, so nothing it loads counts against a model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.config import BenchConfig
from benchmarks.targets import Target, run_worker, target, worker_environment
from benchmarks.worker import STATUS_OK, cpu_model
from training.errors import UserError

log = logging.getLogger("edgecomplete.bench")

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}
QUALITY_KEYS = ("n", "rouge1", "rouge2", "rougeL", "top1", "top3", "keystroke_savings")


@dataclass
class ModelEntry:
    """One model to measure: what the report names it, and the spec a worker opens."""

    model: str  # e.g. lstm-256, distilgpt2
    file: str  # the file a device would ship
    quantization: str
    spec: dict
    size_bytes: int  # measured on disk
    emulatable: bool  # has an arm64 runtime in the emulated target
    weights: str = "trained"
    quality: dict | None = None
    quality_note: str = ""
    extra: dict = field(default_factory=dict)


def summarise(samples: list[float]) -> dict:
    """p50, p90, p99 of latencies in milliseconds (linear interpolation), and the sample count."""
    if not samples:
        return {name: None for name in PERCENTILES} | {"n": 0}
    values = np.asarray(samples)
    return {name: round(float(np.percentile(values, q)), 4) for name, q in PERCENTILES.items()} | {"n": len(samples)}


def run_bench(config: BenchConfig) -> list[dict]:
    from benchmarks import report

    config.validate()
    bundle = _check_bundle(config.bundle)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log.info("bench config: %s", json.dumps(config.to_dict()))

    # Everything that can fail cheaply fails before any worker runs.
    emulator = _emulator(config) if "emulated-aarch64" in config.targets else None
    prompts, prompt_note = _prompts(config)
    models = plan_models(config, bundle)

    records = []
    for name in config.targets:
        t = target(name)
        for entry in models:
            if t.emulated and not entry.emulatable:
                log.info("%s %s: no arm64 runtime in the emulated target; skipped there", entry.model, entry.file)
                continue
            records.append(measure(entry, t, prompts, config, out / "workers", emulator))
            _log_record(records[-1])
    _mark_emulated_parity(records)
    if not config.quote_prompts:
        _drop_prompt_text(records, out / "workers")
    report.write_report(records, out, config, prompt_note)
    return records


def _drop_prompt_text(records: list[dict], workers: Path) -> None:
    """Remove every copy of the prompts' text: the samples' prefixes and the workers' spec and result files."""
    for record in records:
        for sample in record["samples"]:
            sample.pop("prefix", None)
    shutil.rmtree(workers, ignore_errors=True)


def _check_bundle(path: str):
    from edge_runtime.manifest import BundleError, load_manifest

    try:
        return load_manifest(path)
    except BundleError as e:
        raise UserError(str(e)) from None


def _emulator(config: BenchConfig):
    from benchmarks.setup_aarch64 import find_emulator

    return find_emulator(config.aarch64_dir or None)


def _prompts(config: BenchConfig) -> tuple[list[dict], dict]:
    from benchmarks.prompts import typical_prompts
    from training.corpus import data_root

    data = config.data or str(data_root() / "sentiment140" / "tweets.txt")
    prompts, note = typical_prompts(data, config.prompts)
    log.info("prompts: %d test texts of %d words (the median) from %s", note["count"], note["words"], data)
    return prompts, note


def plan_models(config: BenchConfig, manifest) -> list[ModelEntry]:
    """The bundle's files, the checkpoint if one is found, and DistilGPT2 if asked for."""
    bundle = manifest.folder
    model_name = _model_name(manifest)
    wanted = config.files or [f.path for f in manifest.files]
    entries = []
    for name in wanted:
        entry = manifest.file(name)  # raises BundleError naming the files it does have
        path = manifest.verify_file(entry)
        spec = {"kind": "bundle", "bundle": str(bundle), "file": entry.path, "backend": "auto"}
        # Known gap: the full-integer (16x8) TFLite file is not run emulated. CPUs
        # run it on reference kernels (about 16x the dynamic-range file's step),
        # and under qemu the whole workload would take tens of minutes; a
        # shorter emulated workload for such files is what is missing.
        emulatable = entry.quantization != "int8-full"
        entries.append(ModelEntry(model_name, entry.path, entry.quantization, spec, path.stat().st_size, emulatable))

    checkpoint = _find_checkpoint(config, bundle)
    if checkpoint is not None:
        spec = {"kind": "checkpoint", "checkpoint": str(checkpoint), "bundle": str(bundle)}
        entries.append(ModelEntry(model_name, checkpoint.name, "fp32", spec, checkpoint.stat().st_size, False))

    saved = saved_quality(bundle)
    for entry in entries:
        if config.eval_texts:
            entry.quality = _quality(entry, config)
        elif _quality_key(entry) in saved:
            entry.quality, name = saved[_quality_key(entry)]
            entry.quality_note = f"from {name}, written by `edgecomplete eval`"
    if config.distilgpt2:
        entries += _distilgpt2_entries(config)
    return entries


def _model_name(manifest) -> str:
    arch = manifest.model.get("arch", "model")
    hidden = manifest.model.get("hidden_size")
    return f"{arch}-{hidden}" if hidden else arch


def _find_checkpoint(config: BenchConfig, bundle: Path) -> Path | None:
    if config.checkpoint:
        path = Path(config.checkpoint)
        path = path / "model.pt" if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        return path
    for candidate in (bundle / "model.pt", bundle.parent / "model.pt"):
        if candidate.is_file():
            return candidate
    return None


def _quality(entry: ModelEntry, config: BenchConfig) -> dict | None:
    """ROUGE and next-word accuracy from the quality protocol, on the first `eval_texts` test texts."""
    from training.corpus import data_root
    from training.evaluate import evaluate_path

    data = config.data or str(data_root() / "sentiment140" / "tweets.txt")
    if entry.spec["kind"] == "bundle":
        path, model_file = entry.spec["bundle"], entry.file
    else:
        path, model_file = entry.spec["checkpoint"], None
    log.info("quality: %s %s on %d test texts", entry.model, entry.file, config.eval_texts)
    report = evaluate_path(path, data, split="test", limit=config.eval_texts, model_file=model_file)
    return {k: report[k] for k in QUALITY_KEYS if k in report}


def saved_quality(bundle: Path) -> dict[tuple[str, str], tuple[dict, str]]:
    """Test-split `eval` reports kept in the bundle folder, by (kind, file).

    A full test-split score takes minutes per file, longer than the whole
    benchmark; a release bundle carries its reports (`edgecomplete eval ...
    > eval-int8-onnx.json`), and --eval-texts 0 reuses them instead. Only
    greedy reports count, the decoding the benchmark's completions use.
    """
    found = {}
    for path in sorted(bundle.glob("eval*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            log.warning("skipping %s: not an eval report", path)
            continue
        if not isinstance(report, dict) or report.get("split") != "test" or "rouge1" not in report:
            continue
        if report.get("beam_width", 1) != 1 or report.get("mbr"):
            continue
        model = report.get("model") or {}
        kind = model.get("kind")
        file = model.get("file") if kind == "bundle" else Path(str(model.get("path", ""))).name
        if kind in ("bundle", "checkpoint") and file:
            found[(kind, file)] = ({k: report[k] for k in QUALITY_KEYS if k in report}, path.name)
    return found


def _quality_key(entry: ModelEntry) -> tuple[str, str]:
    return entry.spec["kind"], entry.file


def _distilgpt2_entries(config: BenchConfig) -> list[ModelEntry]:
    from benchmarks import distilgpt2
    from training.corpus import data_root

    gpt2_dir = config.gpt2_dir or str(data_root() / "gpt2")
    if config.distilgpt2_dir:
        baseline = distilgpt2.from_folder(config.distilgpt2_dir, gpt2_dir)
    else:
        baseline = distilgpt2.prepare(gpt2_dir, config.cache_dir, config.distilgpt2_weights)
    note = (
        "random weights (no pretrained weights here): size, memory and speed hold, quality does not"
        if baseline.weights == "random"
        else "pretrained; quality not scored (the quality protocol scores word-level models)"
    )
    safetensors = baseline.torch_dir / "model.safetensors"
    extra = {"parameters": baseline.info.get("parameters"), "parity": baseline.info.get("parity")}
    common = {"weights": baseline.weights, "quality_note": note, "extra": extra}
    entries = []
    torch_installed = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    if safetensors.is_file() and torch_installed:
        size = safetensors.stat().st_size
        entries.append(ModelEntry("distilgpt2", safetensors.name, "fp32", baseline.torch_spec(), size, False, **common))
    else:
        log.info("DistilGPT2 in PyTorch: skipped (needs torch and transformers, and the export's torch folder)")
    size = baseline.int8_onnx.stat().st_size
    emulate = config.emulate_distilgpt2
    entries.append(
        ModelEntry("distilgpt2", "model.int8.onnx", "int8-dynamic", baseline.onnx_spec(), size, emulate, **common)
    )
    return entries


def measure(entry: ModelEntry, t: Target, prompts: list[dict], config: BenchConfig, workdir: Path, emulator) -> dict:
    """Run one worker for (entry, t) and turn what it reports into one record."""
    if t.emulated:
        prompts = prompts[: config.emulated_prompts]
    spec = {
        "model": entry.spec,
        "threads": t.threads,
        "prompts": prompts,
        "k": config.k,
        "repeats": 1 if t.emulated else config.repeats,
        "warmup_steps": config.warmup_steps,
        "warmup_calls": config.warmup_calls,
    }
    folder = workdir / f"{t.name}-{entry.model}-{entry.file}".replace("/", "_")
    log.info("measuring %s %s on %s", entry.model, entry.file, t.name)
    if t.emulated:
        env = emulator.environment(worker_environment(t))
        command = [*emulator.python(), "-m", "benchmarks.worker"]
        launch = run_worker(spec, t, folder, config.timeout_s, command=command, env=env)
    else:
        launch = run_worker(spec, t, folder, config.timeout_s)
    return make_record(entry, t, launch, spec, emulator)


def make_record(entry: ModelEntry, t: Target, launch, spec: dict, emulator=None) -> dict:
    result = launch.result
    record = {
        "model": entry.model,
        "file": entry.file,
        "quantization": entry.quantization,
        "runtime": result.get("runtime"),
        "runtime_version": result.get("runtime_version"),
        "target": t.name,
        "target_description": t.description,
        "emulated": t.emulated,
        "threads": t.threads,
        "status": launch.status,
        "error": result.get("error"),
        "size_bytes": entry.size_bytes,
        "peak_rss_bytes": result.get("peak_rss_bytes"),
        "model_rss_bytes": result.get("model_rss_bytes"),
        "rss_runtime_bytes": result.get("rss_runtime_bytes"),
        "load_ms": _round(result.get("load_ms")),
        "weights": entry.weights,
        "quality": entry.quality,
        "quality_note": entry.quality_note,
    }
    for figure in ("first_token", "token", "completion", "keystroke"):
        stats = summarise(result.get(f"{figure}_ms", []))
        for name in PERCENTILES:
            record[f"{figure}_ms_{name}"] = stats[name]
        record[f"{figure}_samples"] = stats["n"]
    record.update(
        tokens_per_word=_round(result.get("tokens_per_word")),
        cpu_model=result.get("cpu_model") or cpu_model(),
        machine=result.get("machine") or platform.machine(),
        python=result.get("python"),
        host_cpu_model=cpu_model(),
        workload=_workload(spec),
        samples=result.get("samples", []),
        **launch.settings(),
        **entry.extra,
    )
    if t.emulated and emulator is not None:
        record["emulator"] = {"qemu": Path(emulator.qemu).name, "cpu": "cortex-a72", "wheels": emulator.versions}
    return record


def _workload(spec: dict) -> dict:
    return {"prompts": len(spec["prompts"]), **{k: spec[k] for k in ("k", "repeats", "warmup_steps", "warmup_calls")}}


def _round(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def _mark_emulated_parity(records: list[dict]) -> None:
    """For each emulated record, whether its suggestions and completions equal native's on the same prompts."""
    native = {(r["model"], r["file"]): r for r in records if r["target"] == "native" and r["status"] == STATUS_OK}
    for record in records:
        if not record["emulated"] or record["status"] != STATUS_OK:
            continue
        reference = native.get((record["model"], record["file"]))
        if reference is None:
            record["suggestions_match_native"] = None
            continue
        ours = record["samples"]
        theirs = reference["samples"][: len(ours)]
        record["suggestions_match_native"] = ours == theirs


def _log_record(record: dict) -> None:
    if record["status"] != STATUS_OK:
        log.info("  %s: %s", record["status"], record.get("error"))
        return
    log.info(
        "  token p50 %.3f ms, p99 %.3f ms, peak RSS %.1f MiB, load %.0f ms",
        record["token_ms_p50"],
        record["token_ms_p99"],
        record["peak_rss_bytes"] / 2**20,
        record["load_ms"],
    )

"""export_bundle: checkpoint in, verified bundle folder out.

The bundle is written into a temporary folder beside its destination and
renamed into place only once every file is written and verified, so a
crash or a failed check never leaves a half-written or mixed bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from edge_runtime import manifest as mf
from edge_runtime.text import NORMALISATION
from edge_runtime.vocab import SPECIALS
from export.config import ExportConfig
from export.deps import quiet_logs, require
from export.verify import VerificationError, fp32_failures, verify
from training import checkpoint
from training.errors import UserError

log = logging.getLogger("edgecomplete.export")

VERIFY_FILE = "verify.json"
ONNX_QUANTIZATION = {"dynamic": "int8-dynamic", "static": "int8-static"}
# Each int8 TFLite quantization has a file of its own, so a bundle can hold both.
TFLITE_INT8_FILES = {"dynamic": ("model.int8.tflite", "int8-dynamic"), "full": ("model.int8-full.tflite", "int8-full")}


def export_bundle(checkpoint_path: str | Path, out_dir: str | Path, config: ExportConfig) -> Path:
    """Export, quantize and verify a checkpoint into the bundle folder `out_dir`; returns its path.

    Raises UserError for bad input (nothing written) and VerificationError
    when an fp32 file does not reproduce PyTorch (nothing written either).
    """
    config.validate()
    log.info("export config: %s", json.dumps(config.to_dict()))
    out_dir = Path(out_dir)
    _check_destination(out_dir, config.force)
    _check_packages(config)
    ckpt = checkpoint.load(checkpoint_path)
    model, vocab = _model_and_vocab(ckpt, checkpoint_path)

    from export.data import load_texts

    texts = load_texts(config.data, config.calibration_texts)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the bundle into place
    try:
        entries = _write_models(model, vocab, staging, texts, config)
        report = verify(model, vocab, staging, entries, texts.verification, config)
        report.update(data=texts.source, config=config.to_dict(), versions=_versions())
        _write_json(staging / VERIFY_FILE, report)
        failures = fp32_failures(report)
        if failures:
            worst = max(failures, key=lambda f: f["max_logit_diff"])
            raise VerificationError(
                f"{worst['path']} differs from PyTorch by {worst['max_logit_diff']:.3g} in a logit "
                f"(tolerance {config.fp32_tolerance:g}): the exported graph is wrong; no bundle written",
                report,
            )
        _write_json(staging / mf.MANIFEST_FILE, _manifest(model, vocab, entries, ckpt, checkpoint_path))
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _check_destination(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not force:
        raise UserError(f"output folder {out_dir} already exists: choose another --out or pass --force to replace it")
    # --force replaces a bundle, never an arbitrary folder that happens to be named.
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not mf.is_bundle(out_dir)):
        raise UserError(f"{out_dir} exists and is not a bundle folder: refusing to replace it, even with --force")


def _check_packages(config: ExportConfig) -> None:
    """Fail before any work when a format's package is missing."""
    if "onnx" in config.formats:
        require("onnx", "ONNX export")
        require("onnxruntime", "ONNX export")
    if "tflite" in config.formats:
        require("tensorflow", "TFLite export")
    require("rouge_score", "Verification")


def _model_and_vocab(ckpt: dict, path):
    try:
        model, vocab = checkpoint.model_of(ckpt), checkpoint.vocab_of(ckpt)
    except (KeyError, RuntimeError, TypeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} has a damaged model or vocabulary ({first_line}); retrain it") from None
    if len(vocab) != model.config.vocab_size:
        raise UserError(f"{path} holds {len(vocab)} words but a model for {model.config.vocab_size}; retrain it")
    return model, vocab


def _write_models(model, vocab, folder: Path, texts, config: ExportConfig) -> list[dict]:
    """Write vocab.json and every model file; the manifest's file records, in a fixed order."""
    from export.data import calibration_samples, encode
    from export.runners import TorchRunner
    from export.step_graph import weights_of

    vocab.save(folder / mf.VOCAB_FILE)
    weights = weights_of(model)
    samples = []
    if config.quantize and (config.onnx_quantization == "static" or "tflite" in config.formats):
        log.info("calibrate: %d steps from %d val texts", config.calibration_steps, len(texts.calibration))
        samples = calibration_samples(TorchRunner(model), encode(texts.calibration, vocab), config.calibration_steps)

    written: list[tuple[str, str, str]] = []  # (file, format, quantization)
    if "onnx" in config.formats:
        written += _write_onnx(weights, folder, samples, config)
    if "tflite" in config.formats:
        written += _write_tflite(weights, folder, samples, config)
    return [_file_entry(folder, name, fmt, quantization) for name, fmt, quantization in written]


def _write_onnx(weights, folder: Path, samples, config: ExportConfig) -> list[tuple[str, str, str]]:
    from export import onnx_export

    log.info("export: model.onnx (opset %d)", config.opset)
    with quiet_logs():
        onnx_export.export_onnx(weights, folder / "model.onnx", config.opset)
    written = [("model.onnx", "onnx", "fp32")]
    if config.quantize:
        quantization = ONNX_QUANTIZATION[config.onnx_quantization]
        log.info("quantize: model.int8.onnx (%s)", quantization)
        names = ["token_ids", *weights.state_names]
        with quiet_logs():
            if config.onnx_quantization == "static":
                feeds = [dict(zip(names, sample)) for sample in samples]
                onnx_export.quantize_onnx_static(folder / "model.onnx", folder / "model.int8.onnx", feeds)
            else:
                onnx_export.quantize_onnx_dynamic(folder / "model.onnx", folder / "model.int8.onnx")
                if weights.tied:
                    onnx_export.share_tied_table(folder / "model.int8.onnx", weights.embedding)
        written.append(("model.int8.onnx", "onnx", quantization))
    return written


def _write_tflite(weights, folder: Path, samples, config: ExportConfig) -> list[tuple[str, str, str]]:
    from export import tflite_export

    log.info("export: model.tflite")
    with quiet_logs():
        tflite_export.export_tflite(weights, folder / "model.tflite")
    written = [("model.tflite", "tflite", "fp32")]
    if config.quantize:
        kinds = ("dynamic", "full") if config.tflite_quantization == "both" else (config.tflite_quantization,)
        for kind in kinds:
            name, quantization = TFLITE_INT8_FILES[kind]
            if quantization == "int8-full" and weights.full_integer_unsupported:
                log.info("skip: %s for arch %s: %s", name, weights.arch, weights.full_integer_unsupported)
                continue
            log.info("quantize: %s (%s)", name, quantization)
            with quiet_logs():
                tflite_export.export_tflite(weights, folder / name, quantization, samples)
            written.append((name, "tflite", quantization))
    return written


def _file_entry(folder: Path, name: str, fmt: str, quantization: str) -> dict:
    path = folder / name
    return {
        "path": name,
        "format": fmt,
        "quantization": quantization,
        "sha256": mf.sha256_of(path),
        "size_bytes": path.stat().st_size,
    }


def _manifest(model, vocab, entries: list[dict], ckpt: dict, checkpoint_path) -> dict:
    from export.step_graph import weights_of
    from training.config import WINDOW_ARCHS
    from training.models import count_parameters

    config = model.config
    state_layout = weights_of(model).state_layout
    window = {"window": config.window} if config.arch in WINDOW_ARCHS else {}
    return {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "tokenizer": {
            "normalisation": NORMALISATION,
            "vocab_file": mf.VOCAB_FILE,
            "vocab_size": len(vocab),
            "special_tokens": {name: vocab.index[token] for name, token in zip(("pad", "unk", "bos", "eos"), SPECIALS)},
        },
        "model": {
            "arch": config.arch,
            "embedding_dim": config.embedding_dim,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_layers,
            "tie_embeddings": config.tie_embeddings,
            **window,
            "parameters": count_parameters(model),
        },
        "graph": {
            "inputs": [{"name": "token_ids", "shape": ["batch"], "dtype": "int32"}]
            + [{"name": name, "shape": shape, "dtype": "float32"} for name, shape in state_layout],
            "outputs": [{"name": "logits", "shape": ["batch", len(vocab)], "dtype": "float32"}]
            + [{"name": f"{name}_out", "shape": shape, "dtype": "float32"} for name, shape in state_layout],
            "state": [{"input": name, "output": f"{name}_out"} for name, _ in state_layout],
            "scores": {"name": "logits", "kind": "logits"},
        },
        "files": entries,
        "source": {
            "checkpoint": checkpoint.resolve(checkpoint_path).name,
            "step": ckpt.get("state", {}).get("step"),
            "val_loss": ckpt.get("state", {}).get("best_val_loss"),
        },
    }


def _versions() -> dict[str, str | None]:
    """The packages that wrote and ran the files: numbers move with them."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("torch", "onnx", "onnxruntime", "tensorflow-cpu", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished bundle to `out_dir`, swapping out an old bundle there (--force)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(staging, out_dir)
    except OSError:
        # Put the old bundle back before giving up: never leave no bundle where there was one.
        os.replace(old / out_dir.name, out_dir)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)

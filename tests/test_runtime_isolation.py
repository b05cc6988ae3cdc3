"""The import claim: edge_runtime runs with numpy and one interpreter, the heavy packages absent, not just unimported.

Each case builds a fresh virtual environment holding numpy and one
interpreter (pip, from the configured package index; the legacy
tflite-runtime with numpy below 2, as on a 32-bit Raspberry Pi), puts only the
edge_runtime folder on its path, proves torch, tensorflow, onnx and
transformers cannot be found there, and runs real suggestions on a bundle,
which must equal those of the development environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import edge_runtime

REPO = Path(__file__).resolve().parents[1]
ABSENT = ["torch", "tensorflow", "onnx", "transformers", "training", "export", "edgecomplete"]
TEXTS = ["see you tomo", "i love ", "", "😀 \ud800 مرحبا"]
FULL_INTEGER = "model.int8-full.tflite"

PROBE = """
import importlib.util, json, sys
absent = {absent!r}
found = [name for name in absent if importlib.util.find_spec(name) is not None]
assert not found, f"should be absent: {{found}}"
import numpy, {interpreter}
before = set(sys.modules)  # what numpy and the interpreter bring in themselves
import edge_runtime
refused = {{}}
for model_file in {refused!r}:
    try:
        edge_runtime.load({bundle!r}, model_file, backend={backend!r})
    except edge_runtime.BundleError as e:
        refused[model_file] = str(e)
results = {{}}
for model_file in {files!r}:
    model = edge_runtime.load({bundle!r}, model_file, backend={backend!r})
    assert model.backend_name == {backend!r}, model.backend_name
    results[model_file] = [
        [[[s.word, s.score] for s in model.suggest(text, k=3)], model.complete(text, n_words=3, beam_width=2)]
        for text in {texts!r}
    ]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in absent)
# Resident weight a keyboard process would carry for nothing (see edge_runtime.manifest and .backends).
idle = sorted(m for m in ("_hashlib", "importlib.metadata") if m in sys.modules and m not in before)
report = {{"results": results, "refused": refused, "heavy": heavy, "idle": idle}}
print(json.dumps(report | {{"numpy": __import__("numpy").__version__}}))
"""


def _expected(bundle, files):
    results = {}
    for model_file in files:
        model = edge_runtime.load(bundle, model_file)
        results[model_file] = [
            [[[s.word, s.score] for s in model.suggest(text, k=3)], model.complete(text, n_words=3, beam_width=2)]
            for text in TEXTS
        ]
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "packages", "files", "refused"),
    [
        ("onnxruntime", ["numpy", "onnxruntime"], ["model.onnx", "model.int8.onnx"], []),
        ("ai-edge-litert", ["numpy", "ai-edge-litert"], ["model.tflite", "model.int8.tflite", FULL_INTEGER], []),
        # The legacy interpreter, frozen at 2.14, needs numpy below 2. It runs
        # the fp32 and full-integer files; the dynamic-range file's per-channel
        # FULLY_CONNECTED (version 12) is newer than it, and it says so.
        (
            "tflite-runtime",
            ["numpy<2", "tflite-runtime==2.14.0"],
            ["model.tflite", FULL_INTEGER],
            ["model.int8.tflite"],
        ),
    ],
)
def test_runs_with_numpy_and_one_interpreter_only(exported_bundle, tmp_path, backend, packages, files, refused):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]

    # Only the runtime's own folder: none of the project's other packages come along.
    site = tmp_path / "site"
    shutil.copytree(REPO / "edge_runtime", site / "edge_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    interpreter = {"onnxruntime": "onnxruntime", "ai-edge-litert": "ai_edge_litert.interpreter"}.get(
        backend, "tflite_runtime.interpreter"
    )
    script = PROBE.format(
        absent=ABSENT,
        files=files,
        refused=refused,
        bundle=str(exported_bundle),
        backend=backend,
        texts=TEXTS,
        interpreter=interpreter,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report["refused"]) == refused
    for model_file, message in report["refused"].items():
        assert len(message.splitlines()) == 1 and model_file in message and "ai-edge-litert" in message, message
    assert report["heavy"] == []
    assert report["idle"] == []
    expected = _expected(exported_bundle, files)
    # The expectation comes from this environment's interpreter; the legacy one
    # computes int8 kernels its own way, so its scores may differ in the third decimal.
    tolerance = 1e-4 if backend in edge_runtime.installed_backends() else 2e-2
    for model_file in files:
        for (suggestions, words), (want_suggestions, want_words) in zip(
            report["results"][model_file], expected[model_file]
        ):
            assert [w for w, _ in suggestions] == [w for w, _ in want_suggestions]
            got, want = [s for _, s in suggestions], [s for _, s in want_suggestions]
            assert got == pytest.approx(want, abs=tolerance), (model_file, got, want)
            assert words == want_words
    assert sys.prefix != str(env_dir)

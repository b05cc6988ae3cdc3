"""The emulated-aarch64 target: an arm64 Python under qemu gives the suggestions native gives.

Needs `python -m benchmarks.setup_aarch64` (run as root; .ci/run does it).
Where it has not been run the test is skipped with that instruction, except
in CI, where a missing setup is a failure.
"""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.bench import run_bench
from benchmarks.config import BenchConfig
from benchmarks.worker import STATUS_OK
from training.errors import UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emulator():
    from benchmarks.setup_aarch64 import find_emulator

    try:
        return find_emulator()
    except UserError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


def test_emulated_suggestions_equal_native_for_every_file(emulator, tiny_bundle_all, tmp_path):
    corpus = tmp_path / "texts.txt"
    # Real-looking texts in the tiny vocabulary; enough that the test split holds a few.
    words = [
        "i",
        "see",
        "you",
        "tomorrow",
        "at",
        "home",
        "so",
        "happy",
        "today",
        "good",
        "night",
        "we",
        "love",
        "it",
        "lol",
    ]
    corpus.write_text("\n".join(" ".join(words[i % 7 : i % 7 + 4 + i % 5]) for i in range(400)) + "\n")
    out = tmp_path / "bench"
    config = BenchConfig(
        bundle=str(tiny_bundle_all), out_dir=str(out), targets=["native", "emulated-aarch64"], data=str(corpus)
    )
    config.distilgpt2, config.eval_texts, config.prompts, config.emulated_prompts, config.repeats = False, 0, 3, 2, 1
    records = run_bench(config)

    emulated = [r for r in records if r["target"] == "emulated-aarch64"]
    assert {r["file"] for r in emulated} == {"model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"}
    for record in emulated:
        assert record["status"] == STATUS_OK, record["error"]
        assert record["machine"] == "aarch64" and record["emulated"] is True
        assert record["suggestions_match_native"] is True
        assert len(record["samples"]) == 2 and all(s["suggestions"] for s in record["samples"])
    assert "Emulated figures" in (out / "bench.md").read_text()
    assert json.loads((out / "bench.json").read_text())[-1]["emulator"]["cpu"] == "cortex-a72"

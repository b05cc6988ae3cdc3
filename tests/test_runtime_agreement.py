"""All four model files of a bundle give the same top suggestion, through the same call API.

The acceptance bar: at 98% or more of the positions of 5,000 held-out texts,
model.onnx, model.int8.onnx, model.tflite and model.int8.tflite of
artifacts/default rank the same word first. The slow test holds all four
together, and each file against fp32 ONNX, to it on the shipped default
bundle. The fast one checks the harness on a tiny exported bundle: its fp32
files must agree everywhere, its int8 files nearly (an untrained 16-unit model
has near-ties that int8 rounding flips more often than a trained one).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import REPO, TINY_WORDS

import edge_runtime

FILES = ["model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"]
BAR = 0.98
# The full-integer (16x8) TFLite file, for integer-only accelerators, is not
# one of the four: its int16 state still rounds a little at every step, and
# the shipped model's file gives fp32 ONNX's top suggestion at 97.9% of these
# positions (98.7% top-1 against PyTorch in the export's verification, whose
# argmax may be a special token). Its own bar, against fp32 ONNX:
FULL_INTEGER = "model.int8-full.tflite"
FULL_INTEGER_BAR = 0.975


def top_suggestions(model, texts: list[list[str]]) -> np.ndarray:
    """The top next-word suggestion (a token id) at every position of every text, each text from <bos>."""
    tops = []
    for words in texts:
        log_probs, state = model.start()
        for position, token_id in enumerate(model.vocab.encode(words)):
            tops.append(model.vocab.index[model.rank(log_probs, 1)[0].word])
            if position < len(words) - 1:
                log_probs, state = model.step(token_id, state)
    return np.array(tops)


def agreement(bundle, texts: list[list[str]], files=FILES, together=None) -> dict:
    """Share of positions where the files of `together` (default: all) agree, and where each file agrees with the first.

    The first file, fp32 ONNX, is the reference.
    """
    tops = {f: top_suggestions(edge_runtime.load(bundle, f), texts) for f in files}
    reference = tops[files[0]]
    all_agree = np.all([tops[f] == reference for f in together or files], axis=0)
    return {
        "positions": int(reference.size),
        "all_files": float(all_agree.mean()),
        "with_reference": {f: float((tops[f] == reference).mean()) for f in files[1:]},
    }


def test_tiny_bundle_files_agree(exported_bundle):
    rng = random.Random(0)
    texts = [[rng.choice(TINY_WORDS) for _ in range(rng.randint(4, 20))] for _ in range(300)]
    result = agreement(exported_bundle, texts)
    assert result["positions"] == sum(len(t) for t in texts)
    assert result["with_reference"]["model.tflite"] == 1.0, result
    # The bar is for trained models; an untrained one calibrated on made-up texts sits lower (about 93%).
    assert result["all_files"] >= 0.85, result


@pytest.mark.slow
def test_default_bundle_files_agree_on_5000_held_out_texts():
    from training.corpus import data_root, read_texts

    bundle = REPO / "artifacts" / "default"
    if not edge_runtime.manifest.is_bundle(bundle):
        pytest.skip(f"no default bundle at {bundle}: export one first (edgecomplete export ... --out {bundle})")
    listed = {f.path for f in edge_runtime.load_manifest(bundle).files}
    assert {*FILES, FULL_INTEGER} <= listed, f"the default bundle lacks {sorted({*FILES, FULL_INTEGER} - listed)}"
    texts = [t for t in read_texts([data_root() / "sentiment140" / "tweets.txt"], split="test") if t][:5000]
    assert len(texts) == 5000
    # The bar for all files at once is on the four of the bundle's design; the
    # full-integer file is held to it against fp32 ONNX alone.
    result = agreement(bundle, texts, [*FILES, FULL_INTEGER], together=FILES)
    print(result)
    # 98.1% all four, each int8 file 98.8-98.9% against fp32 ONNX, measured
    # with the u8u8 ONNX products and the per-row tied tables (see export/).
    assert result["all_files"] >= BAR, result
    for name, share in result["with_reference"].items():
        assert share >= (FULL_INTEGER_BAR if name == FULL_INTEGER else BAR), (name, result)

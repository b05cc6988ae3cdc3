"""DistilGPT2, the baseline: built, exported to int8 ONNX with its key-value cache, cached.

What a user would run on a device: a decoder-with-past graph (tokens and the
cache of earlier tokens in, the last position's logits and the grown cache
out), int8 weights by onnxruntime's dynamic quantization, the same
quantization the bundle's int8 ONNX file gets. The PyTorch baseline is
transformers' GPT2LMHeadModel with its own cache.

Weights: pretrained when a local folder is given (or "hub", where the model
hub is reachable); otherwise the model is built from the shared config with
random weights. Random weights have the same file size, memory and speed,
so every figure but quality holds; the report says which it measured.

The graph is a small module written here over the transformers model's
weights rather than transformers' own ONNX path: transformers' cache API
changes between releases, and this graph names its cache tensors plainly
(past_key_0 ... present_value_5). A parity check against transformers runs
after every export.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from training.errors import UserError

log = logging.getLogger("edgecomplete.bench")

CACHE_FORMAT = 2  # bump when the exported graph changes, so old caches are not reused
CONFIG_FILE = "distilgpt2-config.json"
RANDOM, HUB = "random", "hub"
HUB_NAME = "distilgpt2"
OPSET = 17
SEED = 0  # random weights are reproducible, so a cached export matches a fresh one


@dataclass(frozen=True)
class Baseline:
    """The files a worker loads and what the report says about them."""

    torch_dir: Path  # config.json + model.safetensors
    int8_onnx: Path
    tokenizer_dir: Path
    weights: str  # "pretrained" or "random"
    info: dict  # versions and the parity check, as written to info.json

    def torch_spec(self) -> dict:
        return {
            "kind": "gpt2-torch",
            "model_dir": str(self.torch_dir),
            "tokenizer_dir": str(self.tokenizer_dir),
            "weights": self.weights,
        }

    def onnx_spec(self) -> dict:
        return {
            "kind": "gpt2-onnx",
            "file": str(self.int8_onnx),
            "tokenizer_dir": str(self.tokenizer_dir),
            "weights": self.weights,
        }


def prepare(tokenizer_dir: str | Path, cache_dir: str | Path, weights: str = RANDOM) -> Baseline:
    """The baseline's files, built and exported on first use and read from `cache_dir` after."""
    tokenizer_dir = Path(tokenizer_dir)
    for name in (CONFIG_FILE, "vocab.json", "merges.txt"):
        if not (tokenizer_dir / name).is_file():
            raise UserError(f"{tokenizer_dir / name} not found: point --gpt2-dir at the GPT-2 tokenizer and config")
    if weights not in (RANDOM, HUB) and not Path(weights).is_dir():
        raise UserError(f"DistilGPT2 weights {weights!r} are neither 'random', 'hub' nor a folder")

    missing = [
        m for m in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers") if not importlib.util.find_spec(m)
    ]
    if missing:
        raise UserError(
            f"exporting DistilGPT2 needs {', '.join(missing)}: pip install -e '.[bench]', "
            "pass --distilgpt2-dir with an export made elsewhere, or --no-distilgpt2"
        )

    folder = Path(cache_dir) / "distilgpt2" / _cache_key(tokenizer_dir, weights)
    info_path = folder / "info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        log.info("DistilGPT2: cached export in %s", folder)
    else:
        info = _build(tokenizer_dir, weights, folder)
    return Baseline(folder / "torch", folder / "model.int8.onnx", tokenizer_dir, info["weights"], info)


def from_folder(folder: str | Path, tokenizer_dir: str | Path) -> Baseline:
    """A baseline exported earlier (one folder of the cache, copied to a board that has no torch)."""
    folder = Path(folder)
    if not (folder / "info.json").is_file() or not (folder / "model.int8.onnx").is_file():
        raise UserError(f"{folder} is not a DistilGPT2 export: it needs info.json and model.int8.onnx")
    info = json.loads((folder / "info.json").read_text())
    return Baseline(folder / "torch", folder / "model.int8.onnx", Path(tokenizer_dir), info["weights"], info)


def _cache_key(tokenizer_dir: Path, weights: str) -> str:
    import onnxruntime
    import torch

    digest = hashlib.sha256((tokenizer_dir / CONFIG_FILE).read_bytes())
    digest.update(f"{CACHE_FORMAT} {weights} {torch.__version__} {onnxruntime.__version__}".encode())
    return digest.hexdigest()[:16]


def load_model(tokenizer_dir: Path, weights: str):
    """(GPT2LMHeadModel in eval mode, "pretrained" or "random")."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if weights != RANDOM:
        source = HUB_NAME if weights == HUB else weights
        try:
            return GPT2LMHeadModel.from_pretrained(source).eval(), "pretrained"
        except OSError as e:
            if weights != HUB:
                raise UserError(f"cannot load DistilGPT2 weights from {weights}: {e}") from None
            log.warning("DistilGPT2: the model hub is not reachable (%s); using random weights", str(e)[:120])
    torch.manual_seed(SEED)
    config = GPT2Config.from_json_file(str(tokenizer_dir / CONFIG_FILE))
    return GPT2LMHeadModel(config).eval(), "random"


def _build(tokenizer_dir: Path, weights: str, folder: Path) -> dict:
    import onnxruntime
    import torch
    import transformers

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    model, kind = load_model(tokenizer_dir, weights)
    log.info("DistilGPT2: %s weights, %d parameters; exporting to ONNX (a minute or two)", kind, _parameters(model))
    model.save_pretrained(partial / "torch")

    fp32, int8 = partial / "model.onnx", partial / "model.int8.onnx"
    export_decoder_with_past(model, fp32)
    quantize(fp32, int8)
    info = {
        "weights": kind,
        "parameters": _parameters(model),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
        "parity": check_parity(model, fp32, int8),
    }
    fp32.unlink()  # only the int8 file is benchmarked; fp32 ONNX is 330 MB
    (partial / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return info


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def decoder_with_past(model):
    """A torch module over `model`'s weights: (input_ids [1, S], past...) -> (logits [1, V], present...).

    past and present are, per layer, key then value, each [1, heads, P, head_dim]
    (P + S for present). Only the last position's logits are computed: a
    suggestion needs no others, and the output layer is a fifth of the compute.
    """
    import torch
    from torch import nn

    class DecoderWithPast(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = model.transformer
            self.heads = model.config.n_head

        def forward(self, input_ids, *past):
            t = self.transformer
            steps, before = input_ids.shape[1], past[0].shape[2]
            positions = torch.arange(steps).unsqueeze(0) + before
            x = t.wte(input_ids) + t.wpe(positions)
            # Query i (at position before + i) sees every key up to its own position.
            visible = torch.arange(before + steps).unsqueeze(0) <= (torch.arange(steps).unsqueeze(1) + before)
            presents = []
            for i, block in enumerate(t.h):
                attended, key, value = self._attention(block, block.ln_1(x), past[2 * i], past[2 * i + 1], visible)
                presents += [key, value]
                x = x + attended
                hidden = block.ln_2(x)
                hidden = block.mlp.act(hidden @ block.mlp.c_fc.weight + block.mlp.c_fc.bias)
                x = x + hidden @ block.mlp.c_proj.weight + block.mlp.c_proj.bias
            last = t.ln_f(x[:, -1])
            return (last @ t.wte.weight.T, *presents)

        def _attention(self, block, x, past_key, past_value, visible):
            batch, steps, width = x.shape
            head_dim = width // self.heads
            qkv = x @ block.attn.c_attn.weight + block.attn.c_attn.bias  # [1, S, 3 W]; Conv1D weights are [in, out]
            query, key, value = (
                part.reshape(batch, steps, self.heads, head_dim).transpose(1, 2) for part in qkv.split(width, dim=2)
            )
            key = torch.cat([past_key, key], dim=2)
            value = torch.cat([past_value, value], dim=2)
            scores = (query @ key.transpose(-1, -2)) / math.sqrt(head_dim)
            scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
            attended = torch.softmax(scores, dim=-1) @ value  # [1, heads, S, head_dim]
            attended = attended.transpose(1, 2).reshape(batch, steps, width)
            return attended @ block.attn.c_proj.weight + block.attn.c_proj.bias, key, value

    return DecoderWithPast().eval()


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_{part}_{i}" for i in range(layers) for part in ("key", "value")]
    return past, [name.replace("past_", "present_") for name in past]


def export_decoder_with_past(model, path: Path) -> Path:
    """Write the fp32 decoder-with-past graph; S (new tokens) and P (cached tokens) are dynamic."""
    import torch

    config = model.config
    past_names, present_names = cache_names(config.n_layer)
    head_dim = config.n_embd // config.n_head
    example_past = [torch.zeros(1, config.n_head, 3, head_dim) for _ in past_names]
    dynamic_axes = {"input_ids": {1: "new_tokens"}}
    dynamic_axes.update({name: {2: "past_tokens"} for name in past_names})
    dynamic_axes.update({name: {2: "all_tokens"} for name in present_names})
    # The TorchScript exporter, as export/ uses for the bundle: the graph needs
    # nothing from the dynamo exporter, which needs onnxscript besides.
    with torch.no_grad():
        torch.onnx.export(
            decoder_with_past(model),
            (torch.zeros(1, 2, dtype=torch.int64), *example_past),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", *past_names],
            output_names=["logits", *present_names],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return path


def quantize(fp32_path: Path, int8_path: Path) -> Path:
    """int8 as the bundle's int8 ONNX: the exporter's own dynamic quantization, so both sides get the same settings."""
    from export.onnx_export import quantize_onnx_dynamic

    # The quantizer logs a line per tensor through the root logger; only its warnings matter here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        quantize_onnx_dynamic(fp32_path, int8_path)
    finally:
        root.setLevel(level)
    return int8_path


def check_parity(model, fp32_path: Path, int8_path: Path) -> dict:
    """Prefill, then two cached steps, ONNX against transformers.

    Returns fp32's largest logit difference and int8's top-1 agreement;
    an fp32 graph that does not reproduce transformers is an error.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    tokens = [50256, 464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290]  # <|endoftext|> and a short sentence
    with torch.no_grad():
        reference = model(torch.tensor([tokens])).logits[0].numpy()  # [T, V]

    def run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        past_names, present_names = cache_names(model.config.n_layer)
        head_dim = model.config.n_embd // model.config.n_head
        past = [np.zeros((1, model.config.n_head, 0, head_dim), np.float32) for _ in past_names]
        rows = []
        # The first call fills an empty cache; each later call adds one token to it.
        for chunk in (tokens[:-2], tokens[-2:-1], tokens[-1:]):
            feed = {"input_ids": np.array([chunk], np.int64), **dict(zip(past_names, past))}
            logits, *past = session.run(["logits", *present_names], feed)
            rows.append(logits[0])
        return np.stack(rows)

    expected = reference[[-3, -2, -1]]
    fp32, int8 = run(fp32_path), run(int8_path)
    parity = {
        "fp32_max_abs_diff": float(np.abs(fp32 - expected).max()),
        "int8_top1_agreement": float((int8.argmax(-1) == expected.argmax(-1)).mean()),
    }
    log.info("DistilGPT2 parity: fp32 max |diff| %.2e, int8 top-1 agreement %.2f", *parity.values())
    if parity["fp32_max_abs_diff"] > 1e-3:
        raise RuntimeError(
            f"the exported DistilGPT2 graph differs from transformers by {parity['fp32_max_abs_diff']:.2e}"
        )
    return parity

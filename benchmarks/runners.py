"""The models a worker can measure, behind one word-level interface.

Every runner has:

    runtime, runtime_version, weights          what moves its numbers
    token_ids(words) -> [int]                  the model's tokens for a text, start token first
    initial() -> state                         before any token
    step(token_id, state) -> (scores, state)   one token, batch 1
    suggest(words, k) -> [str]                 a fresh text: feed it, rank the k likeliest next words
    complete(words, m) -> [str]                feed, then m words greedily
    session() -> object with type(chars) and suggest(k)

Model specs (dicts, as JSON carries them from the parent):

    {"kind": "bundle", "bundle": DIR, "file": "model.int8.onnx", "backend": "auto"}
    {"kind": "checkpoint", "checkpoint": PATH, "bundle": DIR}   # the bundle's manifest names the state
    {"kind": "gpt2-torch", "model_dir": DIR, "tokenizer_dir": DIR}
    {"kind": "gpt2-onnx", "file": PATH, "tokenizer_dir": DIR, "layers": 6}

Heavy packages are imported inside each runner: a bundle worker loads
numpy, edge_runtime and its interpreter and nothing else, so its peak
memory is what a device would see.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

# The module a bundle file's backend imports, by edge_runtime's backend names.
_BACKEND_MODULES = {
    "onnxruntime": "onnxruntime",
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}


def import_runtime(spec: dict) -> list[str]:
    """Import what the runner for `spec` needs, before it loads anything; the modules imported.

    The worker reads its memory after this and again at the end, so the
    report can tell the interpreter's own footprint from the model's.
    """
    kind = spec.get("kind")
    modules = ["numpy"]
    if kind == "bundle":
        from edge_runtime import backends

        file_format = "onnx" if spec["file"].endswith(".onnx") else "tflite"
        modules += ["edge_runtime", _BACKEND_MODULES[backends.choose(file_format, spec.get("backend", "auto"))]]
    elif kind == "checkpoint":
        modules += ["torch", "edge_runtime", "training.models"]
    elif kind == "gpt2-torch":
        modules += ["torch", "transformers", "tokenizers"]
    elif kind == "gpt2-onnx":
        modules += ["onnxruntime", "tokenizers"]
    for module in modules:
        importlib.import_module(module)
    return modules


def open_runner(spec: dict, threads: int):
    kind = spec.get("kind")
    if kind == "bundle":
        return BundleRunner(spec, threads)
    if kind == "checkpoint":
        return CheckpointRunner(spec, threads)
    if kind == "gpt2-torch":
        return Gpt2TorchRunner(spec, threads)
    if kind == "gpt2-onnx":
        return Gpt2OnnxRunner(spec, threads)
    raise ValueError(f"unknown model kind {kind!r}: expected bundle, checkpoint, gpt2-torch or gpt2-onnx")


def _text(words: list[str]) -> str:
    # The trailing space marks every word finished, so suggestions are next words, not completions.
    return " ".join(words) + " " if words else ""


class WordModelRunner:
    """An edge_runtime Model: the product's own suggest, complete and session code."""

    weights = "trained"

    def __init__(self, model):
        self.model = model

    def token_ids(self, words: list[str]) -> list[int]:
        return [self.model.vocab.bos_id, *self.model.vocab.encode(words)]

    def initial(self):
        return self.model.initial_state()

    def step(self, token_id: int, state):
        return self.model.step(token_id, state)

    def suggest(self, words: list[str], k: int) -> list[str]:
        return [s.word for s in self.model.suggest(_text(words), k=k)]

    def complete(self, words: list[str], m: int) -> list[str]:
        # Exactly m words, as the quality protocol completes: an early <eos> would shorten the timed work.
        return self.model.complete(_text(words), n_words=m, stop_at_end=False)

    def session(self):
        return self.model.session()


class BundleRunner(WordModelRunner):
    def __init__(self, spec: dict, threads: int):
        import edge_runtime

        model = edge_runtime.load(
            spec["bundle"], model_file=spec["file"], backend=spec.get("backend", "auto"), threads=threads
        )
        super().__init__(model)
        self.runtime, self.runtime_version = model.backend_name, model.backend_version


class _TorchStepBackend:
    """A checkpoint's PyTorch model behind edge_runtime's backend interface (one token, batch 1)."""

    name = "pytorch"

    def __init__(self, module, state_names: list[str]):
        import torch

        self.torch, self.module, self.state_names = torch, module, state_names
        self.version = torch.__version__

    def run(self, token_ids, state):
        torch = self.torch
        with torch.inference_mode():
            tokens = torch.from_numpy(token_ids.astype("int64")).view(1, 1)
            parts = tuple(torch.from_numpy(state[name]) for name in self.state_names)
            logits, next_parts = self.module(tokens, parts)
        next_state = {name: part.numpy() for name, part in zip(self.state_names, next_parts)}
        return logits[:, -1].numpy(), next_state


class CheckpointRunner(WordModelRunner):
    """The training checkpoint in PyTorch, run through the same suggest and session code as the bundle."""

    def __init__(self, spec: dict, threads: int):
        import torch

        from edge_runtime.manifest import load_manifest
        from edge_runtime.model import Model, _load_vocab, _normaliser_of
        from training import checkpoint

        torch.set_num_threads(threads)
        ckpt = checkpoint.load(spec["checkpoint"])
        module = checkpoint.model_of(ckpt)
        manifest = load_manifest(spec["bundle"])
        vocab = _load_vocab(manifest)
        if checkpoint.vocab_of(ckpt).tokens != vocab.tokens:
            raise ValueError(f"checkpoint {spec['checkpoint']} and bundle {spec['bundle']} have different vocabularies")
        backend = _TorchStepBackend(module, [name for name, _ in manifest.state_pairs])
        super().__init__(Model(manifest, vocab, backend, Path(spec["checkpoint"]).name, _normaliser_of(manifest)))
        self.runtime, self.runtime_version = "pytorch", torch.__version__


class Gpt2Runner:
    """Word-level suggestions from a byte-level BPE model (GPT-2 family).

    A text starts with <|endoftext|>, GPT-2's own start-of-text token. A
    suggested word is a token that starts a word (a leading space, then
    letters, digits or apostrophes); a one-token word covers most common
    words, and ranking whole multi-token words would need a search per
    keystroke, which is more than a user would run on a device.
    """

    END_OF_TEXT = 50256

    def __init__(self, tokenizer_dir: str):
        import numpy as np
        from tokenizers import ByteLevelBPETokenizer

        folder = Path(tokenizer_dir)
        self.tokenizer = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        tokens = [""] * (max(vocab.values()) + 1)
        for token, i in vocab.items():
            tokens[i] = token

        # "Ġ" is how byte-level BPE spells a leading space.
        word_ids = [i for i, t in enumerate(tokens) if t.startswith("Ġ") and _is_word(t[1:].lower())]
        words = [tokens[i][1:].lower() for i in word_ids]
        order = sorted(range(len(words)), key=lambda j: words[j])
        self.word_ids = np.array([word_ids[j] for j in order], dtype=np.int64)
        self.words = np.array([words[j] for j in order])  # sorted, so a typed prefix is a searchsorted range
        self.np = np

    def token_ids(self, words: list[str]) -> list[int]:
        return [self.END_OF_TEXT, *self.tokenizer.encode(" ".join(words)).ids]

    def feed(self, ids: list[int], state):
        raise NotImplementedError

    def rank(self, logits, k: int, prefix: str = "") -> list[str]:
        np = self.np
        lo, hi = 0, len(self.word_ids)
        if prefix:
            lo = int(np.searchsorted(self.words, prefix, side="left"))
            hi = int(np.searchsorted(self.words, prefix + "\U0010ffff", side="left"))
        scores = logits[self.word_ids[lo:hi]]
        best = np.argsort(-scores, kind="stable")[: k * 2]
        seen: list[str] = []
        for j in best:  # "Ġthe" and "ĠThe" both become "the"
            word = str(self.words[lo + j])
            if word not in seen:
                seen.append(word)
        return seen[:k]

    def suggest(self, words: list[str], k: int) -> list[str]:
        logits, _ = self.feed(self.token_ids(words), self.initial())
        return self.rank(logits, k)

    def complete(self, words: list[str], m: int) -> list[str]:
        from edge_runtime.text import normalise

        logits, state = self.feed(self.token_ids(words), self.initial())
        generated: list[int] = []
        started = 0
        # Greedy until a token would start word m + 1; a cap stops a model that never ends a word.
        for _ in range(4 * m + 4):
            logits[self.END_OF_TEXT] = -float("inf")
            token = int(logits.argmax())
            if self.tokenizer.id_to_token(token).startswith("Ġ"):
                started += 1
                if started > m:
                    break
            generated.append(token)
            logits, state = self.step(token, state)
        return normalise(self.tokenizer.decode(generated)).split()[:m]

    def session(self):
        return Gpt2Session(self)


class Gpt2Session:
    """Typing into a GPT-2 model with its key-value cache: a finished word is fed once; a letter filters."""

    def __init__(self, runner: Gpt2Runner):
        self.runner = runner
        self.logits, self.state = runner.feed([runner.END_OF_TEXT], runner.initial())
        self.pending = ""
        self.started = False

    def type(self, text: str) -> None:
        for char in text:
            if not char.isspace():
                self.pending += char
            elif self.pending:
                word = self.pending if not self.started else " " + self.pending
                ids = self.runner.tokenizer.encode(word).ids
                self.logits, self.state = self.runner.feed(ids, self.state)
                self.pending, self.started = "", True

    def suggest(self, k: int) -> list[str]:
        return self.runner.rank(self.logits, k, prefix=self.pending.lower())


def _is_word(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c == "'" for c in text) and text.isascii()


class Gpt2TorchRunner(Gpt2Runner):
    """transformers' GPT2LMHeadModel with its key-value cache, as a PyTorch user would run it."""

    def __init__(self, spec: dict, threads: int):
        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(threads)
        super().__init__(spec["tokenizer_dir"])
        self.torch = torch
        self.model = GPT2LMHeadModel.from_pretrained(spec["model_dir"]).eval()
        self.runtime, self.runtime_version = "pytorch", torch.__version__
        self.weights = spec.get("weights", "random")

        # transformers 5 renamed past_key_values to cache; logits_to_keep (4.50+) skips the output
        # layer at every position but the last, as the ONNX graph does.
        accepted = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self.options = {"use_cache": True, **({"logits_to_keep": 1} if "logits_to_keep" in accepted else {})}

    def initial(self):
        return None

    def feed(self, ids: list[int], state):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids]), **{self.cache_arg: state}, **self.options)
        cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        return out.logits[0, -1].numpy().copy(), cache

    def step(self, token_id: int, state):
        return self.feed([token_id], state)


class Gpt2OnnxRunner(Gpt2Runner):
    """The decoder-with-past ONNX graph (benchmarks.distilgpt2): tokens and cache in, last logits and cache out."""

    def __init__(self, spec: dict, threads: int):
        import onnxruntime as ort

        super().__init__(spec["tokenizer_dir"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.ort_session = ort.InferenceSession(spec["file"], options, providers=["CPUExecutionProvider"])
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        self.weights = spec.get("weights", "random")

        past = [i for i in self.ort_session.get_inputs() if i.name.startswith("past_")]
        self.past_names = [i.name for i in past]
        self.present_names = [n.replace("past_", "present_", 1) for n in self.past_names]
        heads, head_dim = past[0].shape[1], past[0].shape[3]
        self.empty = self.np.zeros((1, heads, 0, head_dim), dtype=self.np.float32)

    def initial(self):
        return [self.empty] * len(self.past_names)

    def feed(self, ids: list[int], state):
        feed = {"input_ids": self.np.array([ids], dtype=self.np.int64)}
        feed.update(zip(self.past_names, state))
        logits, *present = self.ort_session.run(["logits", *self.present_names], feed)
        return logits[0], present

    def step(self, token_id: int, state):
        return self.feed([token_id], state)

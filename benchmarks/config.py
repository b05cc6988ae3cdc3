"""The typed config of the benchmark stage.

Each field says its unit or why its default is what it is. The resolved
config is printed at start and written beside the report as
bench-config.json, so every figure can be traced to the settings that
produced it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import UserError

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgecomplete"


@dataclass
class BenchConfig:
    bundle: str  # the bundle folder whose model files are measured
    out_dir: str = "out/bench"
    targets: list[str] = field(default_factory=lambda: ["native"])
    files: list[str] = field(default_factory=list)  # bundle model files to measure; empty = every file listed
    checkpoint: str = ""  # PyTorch checkpoint; empty = model.pt in the bundle or beside it, if there is one
    distilgpt2: bool = True  # also measure DistilGPT2 (PyTorch and int8 ONNX with its cache)
    distilgpt2_weights: str = "random"  # random, hub, or a local folder of pretrained weights
    distilgpt2_dir: str = ""  # an export made elsewhere (a folder of the cache); on a board without torch
    gpt2_dir: str = ""  # GPT-2 tokenizer and DistilGPT2 config; empty = <shared data>/gpt2
    data: str = ""  # texts whose test split gives the prompts; empty = <shared data>/sentiment140/tweets.txt
    prompts: int = 20  # texts of median length; 20 x ~13 tokens x repeats gives ~800 timed steps
    repeats: int = 3  # passes over the prompts for per-token latency
    warmup_steps: int = 20  # model steps run first and discarded: caches, allocator, lazy init
    warmup_calls: int = 2  # suggest and complete calls discarded likewise
    k: int = 3  # suggestions per update, as a keyboard's suggestion bar shows
    emulated_prompts: int = 4  # emulation is 150-500 times slower: a few prompts, one pass
    emulate_distilgpt2: bool = False  # DistilGPT2 under emulation takes tens of minutes
    # Test texts scored by `eval` for each word model's quality; 0 = score
    # none, and show the test-split reports saved in the bundle (eval*.json).
    eval_texts: int = 500
    cache_dir: str = str(DEFAULT_CACHE)  # the exported DistilGPT2 lives here between runs
    aarch64_dir: str = ""  # the emulated target's files; empty = benchmarks.setup_aarch64's default
    timeout_s: float = 1200.0  # per worker; a worker past it is recorded as timed out
    charts: bool = True  # PNG charts (needs matplotlib)
    # The prompts' text in bench.json and bench.md. Off for a report published
    # where the corpus may not go: the suggestions and completions stay.
    quote_prompts: bool = True

    def validate(self) -> None:
        from benchmarks.targets import TARGETS

        if not self.targets:
            raise UserError("no targets given: use one or more of " + ", ".join(TARGETS))
        for name in self.targets:
            if name not in TARGETS:
                raise UserError(f"unknown target {name!r}: use one or more of {', '.join(TARGETS)}")
        for name in ("prompts", "repeats", "k", "emulated_prompts"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "warmup_calls", "eval_texts"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise UserError(f"timeout_s must be positive, got {self.timeout_s}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        # A report is shared beyond the machine it ran on: the home folder is "~" in it.
        home = str(Path.home())
        if data["cache_dir"].startswith(home):
            data["cache_dir"] = "~" + data["cache_dir"][len(home) :]
        return data

"""Typed configs for the training stage.

Each field says its unit or why its default is what it is. A config is saved
inside every checkpoint and beside every trained model, so a result can be
traced to the settings that produced it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import UserError

ARCHS = ("lstm", "gru", "lstm-attention", "cnn-lstm", "transformer")
WINDOW_ARCHS = ("lstm-attention", "cnn-lstm", "transformer")  # the archs that read `window`


@dataclass
class ModelConfig:
    arch: str = "lstm"  # one of ARCHS
    vocab_size: int = 10_000  # words incl. 4 special tokens; 10k leaves ~7% of tweet words unknown
    embedding_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.3  # on embeddings and LSTM outputs; tweets are a small corpus
    tie_embeddings: bool = True  # output layer reuses the input embedding through a projection
    window: int = 0  # lstm-attention: past hidden states attended over; cnn-lstm: convolution width in tokens
    # window, for the transformer: positions each one attends to (itself and the window - 1 before it),
    # the length of its key-value cache. Its width is embedding_dim (d_model), num_layers counts its
    # blocks, and hidden_size is unused.
    num_heads: int = 4  # transformer: attention heads; embedding_dim must divide by it
    ffn_size: int = 1024  # transformer: feed-forward inner width, 4 x d_model as in Vaswani et al. (2017)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"unknown arch {self.arch!r}: use one of {', '.join(ARCHS)}")
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.arch in WINDOW_ARCHS and self.window < 1:
            raise UserError(f"window must be at least 1 for arch {self.arch!r}, got {self.window}: set model.window")
        if self.arch == "transformer":
            self._validate_transformer()

    def _validate_transformer(self) -> None:
        for name in ("num_heads", "ffn_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.embedding_dim % self.num_heads:
            raise UserError(
                f"embedding_dim {self.embedding_dim} is not divisible by num_heads {self.num_heads}: "
                "pick a head count that divides the model width"
            )


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # corpus files or folders; empty = shared data
    out_dir: str = "runs/lstm"
    # Fine-tuning: start from this model file's weights, vocabulary and model
    # config (the `model` section is then ignored). Empty = train from scratch.
    init_from: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    min_count: int = 2  # a word seen once is noise more often than vocabulary
    epochs: int = 4
    batch_size: int = 128  # texts per step; tweets are ~13 tokens, so ~1,700 tokens
    lr: float = 3e-3  # peak, reached after warmup, then cosine decay to lr * 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm
    max_minutes: float = 0.0  # wall-clock budget; 0 = none. The schedule still assumes `epochs`
    max_steps: int = 0  # stop after this many steps in all; 0 = none (used to test resuming)
    eval_every: int = 500  # steps between validation passes
    patience: int = 4  # validation passes without improvement before stopping early
    checkpoint_every: int = 500  # steps between atomic checkpoint writes
    log_every: int = 50  # steps between log lines
    max_val_texts: int = 5_000  # validation loss on a fixed sample keeps each pass short
    bf16: bool = False  # bfloat16 autocast for matrix products (CPUs with avx512_bf16)
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    seed: int = 1234

    def validate(self) -> None:
        self.model.validate()
        positive = ("epochs", "batch_size", "eval_every", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.min_count < 1:
            raise UserError(f"min_count must be at least 1, got {self.min_count}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        model = _from_dict(ModelConfig, data.pop("model", {}), "model")
        config = _from_dict(cls, data, "train")
        config.model = model
        return config


def _from_dict(cls, data: dict, section: str):
    if not isinstance(data, dict):
        raise UserError(f"config section {section!r} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(
            f"unknown config key {unknown[0]!r} in section {section!r}; known keys: {', '.join(sorted(known))}"
        )
    return cls(**data)


def load_config(path: str | Path) -> TrainConfig:
    """Read a JSON train config; unknown keys and impossible values are errors."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"config {path} is not valid JSON: {e}") from None
    try:
        config = TrainConfig.from_dict(data)
    except TypeError as e:
        raise UserError(f"config {path}: {e}") from None
    config.validate()
    return config

"""Word-level recurrent language models (LSTM and GRU).

Shapes: B batch, T time steps, E embedding dim, H hidden size, L layers,
V vocabulary size.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import ModelConfig


class RecurrentLM(nn.Module):
    """Embedding -> LSTM/GRU -> (projection to E, tied output) or (linear to V)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        rnn = nn.LSTM if config.arch == "lstm" else nn.GRU
        self.rnn = rnn(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        if config.tie_embeddings:
            # Tying through a projection lets H differ from E (Press and Wolf, 2017).
            self.projection = nn.Linear(config.hidden_size, config.embedding_dim)
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(config.hidden_size, config.vocab_size)
        nn.init.normal_(self.embedding.weight, std=0.05)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero state: (h, c) for an LSTM, (h,) for a GRU, each [L, B, H]."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        count = 2 if self.config.arch == "lstm" else 1
        return tuple(torch.zeros(shape) for _ in range(count))

    def hidden(self, token_ids: torch.Tensor, state=None):
        """Top-layer outputs [B, T, H] and the final state."""
        x = self.drop(self.embedding(token_ids))
        if state is not None and self.config.arch == "gru":
            state = state[0]
        out, state = self.rnn(x, state)
        if self.config.arch == "gru":
            state = (state,)
        return self.drop(out), state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., V] from top-layer outputs [..., H]."""
        if self.config.tie_embeddings:
            return self.projection(hidden) @ self.embedding.weight.T + self.output_bias
        return self.output(hidden)

    def forward(self, token_ids: torch.Tensor, state=None):
        """Logits [B, T, V] for every position, and the final state."""
        out, state = self.hidden(token_ids, state)
        return self.logits(out), state


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

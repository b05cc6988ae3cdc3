"""Word-level recurrent language models: LSTM, GRU, LSTM with attention, CNN+LSTM.

Shapes: B batch, T time steps, E embedding dim, H hidden size, L layers,
V vocabulary size, W window (config.window).

Every model has the same face: init_state(B), hidden(token_ids, state) ->
(top outputs [B, T, H], state), logits(hidden), forward. The state is a
tuple of tensors with the batch on axis 1, all zeros at the start of a text,
so that the exported one-step graph carries it as fixed-shape inputs and
outputs and a beam search reorders every part of it the same way.
"""

from __future__ import annotations

import math

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
        rnn = nn.GRU if config.arch == "gru" else nn.LSTM
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
        count = 1 if self.config.arch == "gru" else 2
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


class AttentionLSTMLM(RecurrentLM):
    """An LSTM whose output attends over its own last W top-layer outputs (Luong et al., 2015, "general" score).

    Per position t: scores = window . (W_q h_t) / sqrt(H) over h_{t-W+1..t},
    softmax over the slots a text has filled, context = their weighted sum,
    output = tanh(W_c [h_t; context]), then the usual head.

    State: h, c [L, B, H]; window [W, B, H], the last W top-layer outputs,
    oldest first; filled [W, B, 1], 1 where a slot holds an output of this
    text. All zeros is the start of a text.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.combine = nn.Linear(2 * config.hidden_size, config.hidden_size)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero state: (h [L, B, H], c [L, B, H], window [W, B, H], filled [W, B, 1])."""
        window, hidden = self.config.window, self.config.hidden_size
        return (
            *super().init_state(batch_size),
            torch.zeros(window, batch_size, hidden),
            torch.zeros(window, batch_size, 1),
        )

    def hidden(self, token_ids: torch.Tensor, state=None):
        """Attended outputs [B, T, H] and the state after the last position."""
        batch, steps = token_ids.shape
        if state is None:
            state = tuple(s.to(token_ids.device) for s in self.init_state(batch))
        h, c, window, filled = state
        out, (h, c) = self.rnn(self.drop(self.embedding(token_ids)), (h, c))  # out [B, T, H]

        # Keys: the W carried outputs, then the T new ones. Query t (key W + t)
        # sees keys t + 1 .. W + t: itself and the W - 1 before it, if filled.
        size = self.config.window
        keys = torch.cat([window.transpose(0, 1).to(out.dtype), out], dim=1)  # [B, W + T, H]
        key_filled = torch.cat([filled[..., 0].transpose(0, 1), filled.new_ones(batch, steps)], dim=1) > 0
        slot = torch.arange(size + steps, device=out.device)
        position = torch.arange(steps, device=out.device)[:, None]
        band = (slot > position) & (slot <= position + size)  # [T, W + T]
        visible = band[None] & key_filled[:, None, :]  # [B, T, W + T]
        scores = self.query(out) @ keys.transpose(1, 2) / math.sqrt(self.config.hidden_size)
        attention = scores.float().masked_fill(~visible, -torch.inf).softmax(dim=-1).to(out.dtype)
        context = attention @ keys  # [B, T, H]
        attended = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))

        next_window = keys[:, -size:].transpose(0, 1).contiguous()  # [W, B, H]
        next_filled = key_filled[:, -size:].transpose(0, 1)[..., None].to(filled.dtype)  # [W, B, 1]
        return self.drop(attended), (h, c, next_window, next_filled)


class ConvLSTMLM(RecurrentLM):
    """A causal convolution over the last K token embeddings (K = config.window), tanh, feeding the LSTM.

    E channels in and out, so the LSTM reads what it would read without the
    convolution. State: h, c [L, B, H]; past [K-1, B, E], the embeddings of
    the last K-1 tokens, oldest first (absent for K = 1). All zeros is the
    start of a text: the zero padding before its first token.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.conv = nn.Conv1d(config.embedding_dim, config.embedding_dim, kernel_size=config.window)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero state: (h [L, B, H], c [L, B, H], past [K-1, B, E]), past left out for K = 1."""
        past = (torch.zeros(self.config.window - 1, batch_size, self.config.embedding_dim),)
        return (*super().init_state(batch_size), *(past if self.config.window > 1 else ()))

    def hidden(self, token_ids: torch.Tensor, state=None):
        """LSTM outputs [B, T, H] and the state after the last position."""
        batch = token_ids.shape[0]
        if state is None:
            state = tuple(s.to(token_ids.device) for s in self.init_state(batch))
        h, c, *past = state
        x = self.embedding(token_ids)  # [B, T, E]
        if past:
            x = torch.cat([past[0].transpose(0, 1).to(x.dtype), x], dim=1)  # [B, K-1 + T, E]
        features = torch.tanh(self.conv(self.drop(x).transpose(1, 2))).transpose(1, 2)  # [B, T, E]
        out, (h, c) = self.rnn(features, (h, c))
        kept = self.config.window - 1
        next_past = (x[:, x.shape[1] - kept :].transpose(0, 1).contiguous(),) if kept else ()
        return self.drop(out), (h, c, *next_past)


def build_model(config: ModelConfig) -> nn.Module:
    """The untrained model for `config.arch`."""
    config.validate()
    if config.arch == "lstm-attention":
        return AttentionLSTMLM(config)
    if config.arch == "cnn-lstm":
        return ConvLSTMLM(config)
    if config.arch == "transformer":
        from training.transformer import TransformerLM

        return TransformerLM(config)
    return RecurrentLM(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

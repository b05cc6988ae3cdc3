"""A decoder-only transformer LM whose state is a fixed-size key-value cache.

Shapes: B batch, T new time steps, P cached slots (0 or W), W window (the
cache length), D model width (= embedding dim), N heads, K head size (D / N),
F feed-forward width, L layers, V vocabulary size.

Each position attends to itself and the W - 1 positions before it, so the
keys and values of the last W positions are all a step needs: the state is
that cache, shifted by one slot per token, and an exported step has the
same fixed shapes at every position. Positions enter as ALiBi (Press et
al., 2022, "Train Short, Test Long"): no position embeddings, each head
adds -slope * distance to its attention scores. A distance survives the
shifting window (slot j of the cache is W - 1 - j steps back), so the step
graph needs only a constant [N, W] bias.

State: k and v [L, B, W, D], the keys and values of the last W positions,
newest last; filled [1, B, W], 1 where a slot holds a position of this text.
All zeros is the start of a text. Batch is axis 1 of every state tensor, as
in RecurrentLM, so a beam search reorders it the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig


def alibi_slopes(num_heads: int) -> list[float]:
    """Press et al.'s head slopes: 2^(-8/n), 2^(-16/n), ... for n a power of two.

    For other n they take the slopes of the largest power of two below n and
    fill up with every other slope of twice that count.
    """
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = [2 ** (-8 * (i + 1) / closest) for i in range(closest)]
    extra = [2 ** (-8 * (i + 1) / (2 * closest)) for i in range(2 * closest)][0::2]
    return slopes + extra[: num_heads - closest]


class Block(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + feed-forward(norm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        dim = config.embedding_dim
        self.num_heads = config.num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, config.ffn_size)
        self.ff_out = nn.Linear(config.ffn_size, dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, past_k, past_v, bias):
        """x [B, T, D], past keys and values [B, P, D], bias [B, N, T, P + T] (-inf where masked).

        Returns the block's output [B, T, D] and the keys and values [B, P + T, D] of every slot.
        """
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        keys, values = torch.cat([past_k, k], dim=1), torch.cat([past_v, v], dim=1)
        att = F.scaled_dot_product_attention(self._heads(q), self._heads(keys), self._heads(values), attn_mask=bias)
        att = att.transpose(1, 2).flatten(2)  # [B, T, D]
        x = x + self.drop(self.attn_out(att))
        x = x + self.drop(self.ff_out(F.gelu(self.ff_in(self.norm2(x)))))
        return x, keys, values

    def _heads(self, x):
        """[B, S, D] -> [B, N, S, K]."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class TransformerLM(nn.Module):
    """Embedding -> L pre-LayerNorm blocks with windowed ALiBi attention -> LayerNorm -> tied output."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim = config.embedding_dim
        self.embedding = nn.Embedding(config.vocab_size, dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(config.dropout)
        if config.tie_embeddings:
            # The width is the embedding's, so the output layer is the table itself, no projection.
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(dim, config.vocab_size)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(config.num_heads)), persistent=False)
        # GPT-2's initialisation: small weights keep early attention near uniform.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero state, the start of a text: (k [L, B, W, D], v [L, B, W, D], filled [1, B, W])."""
        config = self.config
        cache = (config.num_layers, batch_size, config.window, config.embedding_dim)
        return torch.zeros(cache), torch.zeros(cache), torch.zeros(1, batch_size, config.window)

    def hidden(self, token_ids: torch.Tensor, state=None):
        """Top-layer outputs [B, T, D] (after the final LayerNorm) and the state after the last position.

        Without a state the text starts at token_ids[:, 0]. Every row is
        taken to hold T real positions: a right-padded row's state is that
        of its padded text, as for RecurrentLM.
        """
        batch, steps = token_ids.shape
        x = self.drop(self.embedding(token_ids))
        if state is None:
            # Nothing cached: attend within the new positions only (cheaper than W empty slots).
            past_k = past_v = [x.new_zeros(batch, 0, self.config.embedding_dim)] * len(self.blocks)
            past_filled = x.new_zeros(batch, 0)
        else:
            past_k, past_v, past_filled = state[0].to(x.dtype), state[1].to(x.dtype), state[2][0]
        filled = torch.cat([past_filled, x.new_ones(batch, steps)], dim=1)  # [B, P + T]
        bias = self._attention_bias(filled, steps).to(x.dtype)
        next_k, next_v = [], []
        for k, block in enumerate(self.blocks):
            x, keys, values = block(x, past_k[k], past_v[k], bias)
            next_k.append(self._last_window(keys))
            next_v.append(self._last_window(values))
        next_filled = self._last_window(filled[..., None])[..., 0]
        return self.drop(self.norm(x)), (torch.stack(next_k), torch.stack(next_v), next_filled[None])

    def _attention_bias(self, filled: torch.Tensor, steps: int) -> torch.Tensor:
        """ALiBi bias [B, N, T, P + T]: -slope * distance where a query may attend, -inf elsewhere.

        Query t sits at slot P + t of the keys; it sees slot j when the
        distance P + t - j is in [0, W - 1] and slot j is filled.
        """
        slots = filled.shape[1]
        query = torch.arange(slots - steps, slots, device=filled.device)[:, None]
        distance = query - torch.arange(slots, device=filled.device)[None, :]  # [T, P + T]
        visible = (distance >= 0) & (distance < self.config.window)
        visible = visible[None, None] & (filled[:, None, None, :] > 0)  # [B, 1, T, P + T]
        bias = -self.slopes[:, None, None] * distance.float()  # [N, T, P + T]
        return bias[None].masked_fill(~visible, -torch.inf)

    def _last_window(self, x: torch.Tensor) -> torch.Tensor:
        """The last W slots of x [B, S, D], zeros in front where S < W: [B, W, D]."""
        window = self.config.window
        if x.shape[1] >= window:
            return x[:, x.shape[1] - window :]
        return F.pad(x, (0, 0, window - x.shape[1], 0))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., V] from top-layer outputs [..., D]."""
        if self.config.tie_embeddings:
            return hidden @ self.embedding.weight.T + self.output_bias
        return self.output(hidden)

    def forward(self, token_ids: torch.Tensor, state=None):
        """Logits [B, T, V] for every position, and the state after the last."""
        out, state = self.hidden(token_ids, state)
        return self.logits(out), state

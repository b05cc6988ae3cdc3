"""One step of a language model, written as matrix products and gate nonlinearities.

Shapes: B batch, E embedding dim, H hidden size, L layers, V vocabulary size,
G gate width (4H for an LSTM, 3H for a GRU), W window (attention slots or
convolution width).

A fused LSTM/GRU operator does not quantize in every format (TensorFlow turns
a Keras LSTM that exposes its state into a WHILE loop that full-integer
quantization rejects), so every exported graph spells the cell out. The
weights come from the trained model once, as numpy arrays laid out for
`x @ w`, and both the ONNX and the TFLite builders read them from here.

A step is: look up the token's embedding, run the arch's cell on it and the
state, apply the output head. The lookup and the head are shared; each
arch's weights class supplies the rest, and is the one source of truth for
the state that every file, the manifest and verification use:

- `state_layout`: [(name, shape)] in graph order, "batch" at axis 1 of every
  shape; all zeros is the start of a text. Outputs are named `{name}_out`.
- `register_torch(module)`: its weights as buffers of the torch step module.
- `torch_cell(module, x [B, E], state) -> (y [B, D], next state list)`, D
  being what the head reads (`head[0]`'s rows).
- `tf_cell(tf) -> cell(x [1, E], state list) -> (y [1, D], next state list)`.
- `full_integer_unsupported`: None, or why no 16x8 TFLite file is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

StateLayout = list[tuple[str, list]]  # [(name, shape)], each shape with "batch" at axis 1


@dataclass
class LayerWeights:
    w_ih: np.ndarray  # [E or H, G], gates in PyTorch's order: LSTM i, f, g, o; GRU r, z, n
    w_hh: np.ndarray  # [H, G]
    b_ih: np.ndarray  # [G]
    b_hh: np.ndarray  # [G]


@dataclass
class StepWeights:
    """An LSTM's or a GRU's step; the base of the other recurrent archs' steps."""

    arch: str  # one of training.config.ARCHS
    embedding: np.ndarray  # [V, E]
    layers: list[LayerWeights]
    # The output head as dense layers applied in turn, each (w [in, out], b [out]):
    # tied, a projection H -> E then the transposed embedding E -> V; else one H -> V.
    head: list[tuple[np.ndarray, np.ndarray]]

    @property
    def hidden_size(self) -> int:
        return self.layers[0].w_hh.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def vocab_size(self) -> int:
        return self.embedding.shape[0]

    @property
    def tied(self) -> bool:
        """Whether the output layer is the transposed lookup table."""
        return len(self.head) > 1 and np.array_equal(self.head[-1][0], self.embedding.T)

    @property
    def cell(self) -> str:
        """The recurrent cell: gru, or lstm for every other recurrent arch."""
        return "gru" if self.arch == "gru" else "lstm"

    @property
    def state_layout(self) -> StateLayout:
        shape = [self.num_layers, "batch", self.hidden_size]
        return [("h", shape), ("c", list(shape))] if self.cell == "lstm" else [("h", shape)]

    @property
    def state_names(self) -> list[str]:
        return [name for name, _ in self.state_layout]

    @property
    def full_integer_unsupported(self) -> str | None:
        """None, or why this arch has no 16x8 TFLite file: export skips that file and logs this."""
        return None

    def register_torch(self, module) -> None:
        import torch

        for k, layer in enumerate(self.layers):
            module.register_buffer(f"layer{k}_w_ih", torch.from_numpy(layer.w_ih))
            module.register_buffer(f"layer{k}_w_hh", torch.from_numpy(layer.w_hh))
            if self.cell == "lstm":
                # An LSTM adds both biases to every gate, so one sum will do; a
                # GRU multiplies the hidden part of its n gate by r, so keeps both.
                module.register_buffer(f"layer{k}_b", torch.from_numpy(layer.b_ih + layer.b_hh))
            else:
                module.register_buffer(f"layer{k}_b_ih", torch.from_numpy(layer.b_ih))
                module.register_buffer(f"layer{k}_b_hh", torch.from_numpy(layer.b_hh))

    def torch_cell(self, module, x, state) -> tuple:
        """The stacked cells on x [B, E] and (h, c) or (h,), each [L, B, H]: top output [B, H], next (h, c) or (h,)."""
        import torch

        names = ("w_ih", "w_hh", "b") if self.cell == "lstm" else ("w_ih", "w_hh", "b_ih", "b_hh")
        next_h, next_c = [], []
        for k in range(self.num_layers):
            params = [getattr(module, f"layer{k}_{name}") for name in names]
            if self.cell == "lstm":
                x, c = _lstm_cell(x, state[0][k], state[1][k], *params, self.hidden_size)
                next_c.append(c)
            else:
                x = _gru_cell(x, state[0][k], *params, self.hidden_size)
            next_h.append(x)
        if self.cell == "lstm":
            return x, [torch.stack(next_h), torch.stack(next_c)]
        return x, [torch.stack(next_h)]

    def tf_cell(self, tf):
        """The stacked cells as TensorFlow ops: cell(x [1, E], [h, c] or [h]) -> (top output [1, H], next state)."""
        layers = [[tf.constant(a) for a in _layer_arrays(self.cell, layer)] for layer in self.layers]

        def lstm_cell(x, h, c, w_ih, w_hh, b):
            i, f, g, o = tf.split(tf.matmul(x, w_ih) + b + tf.matmul(h, w_hh), 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
            xr, xz, xn = tf.split(tf.matmul(x, w_ih) + b_ih, 3, axis=-1)
            hr, hz, hn = tf.split(tf.matmul(h, w_hh) + b_hh, 3, axis=-1)
            r = tf.sigmoid(xr + hr)
            z = tf.sigmoid(xz + hz)
            n = tf.tanh(xn + r * hn)
            return (1.0 - z) * n + z * h

        def cell(x, state):
            hs = tf.unstack(state[0], axis=0)  # L x [1, H]
            cs = tf.unstack(state[1], axis=0) if self.cell == "lstm" else None
            next_h, next_c = [], []
            for k, params in enumerate(layers):
                if self.cell == "lstm":
                    x, c = lstm_cell(x, hs[k], cs[k], *params)
                    next_c.append(c)
                else:
                    x = gru_cell(x, hs[k], *params)
                next_h.append(x)
            if self.cell == "lstm":
                return x, [tf.stack(next_h), tf.stack(next_c)]
            return x, [tf.stack(next_h)]

        return cell


@dataclass
class AttentionStepWeights(StepWeights):
    """training.models.AttentionLSTMLM's step: the LSTM, then attention over a window of its outputs."""

    query: np.ndarray  # [H, H], W_q laid out for h @ w
    combine_w: np.ndarray  # [2H, H], W_c for [h; context] @ w
    combine_b: np.ndarray  # [H]
    window: int  # W slots

    @property
    def state_layout(self) -> StateLayout:
        return [
            *super().state_layout,
            ("window", [self.window, "batch", self.hidden_size]),  # the last W top-layer outputs, oldest first
            ("filled", [self.window, "batch", 1]),  # 1 where a slot holds an output of this text
        ]

    def register_torch(self, module) -> None:
        import torch

        super().register_torch(module)
        module.register_buffer("attention_query", torch.from_numpy(self.query))
        module.register_buffer("attention_combine_w", torch.from_numpy(self.combine_w))
        module.register_buffer("attention_combine_b", torch.from_numpy(self.combine_b))

    def torch_cell(self, module, x, state) -> tuple:
        import torch

        h, (next_h, next_c) = super().torch_cell(module, x, state[:2])
        window, filled = state[2], state[3]
        # Shift by one slot: drop the oldest, append the newest.
        window = torch.cat([window[1:], h[None]], dim=0)  # [W, B, H]
        filled = torch.cat([filled[1:], torch.ones_like(filled[:1])], dim=0)  # [W, B, 1]
        q = (h @ module.attention_query) * (1.0 / math.sqrt(self.hidden_size))  # [B, H]
        scores = (window * q[None]).sum(dim=-1, keepdim=True)  # [W, B, 1]
        # Softmax over the filled slots; the newest always is, so no column is all -inf.
        attention = scores.masked_fill(filled == 0, -torch.inf).softmax(dim=0)  # [W, B, 1]
        context = (attention * window).sum(dim=0)  # [B, H]
        y = torch.tanh(torch.cat([h, context], dim=-1) @ module.attention_combine_w + module.attention_combine_b)
        return y, [next_h, next_c, window, filled]

    def tf_cell(self, tf):
        # Batch 1, as every TFLite step: the masked scores are a row [1, W] for tf.nn.softmax.
        lstm = super().tf_cell(tf)
        query = tf.constant(self.query * np.float32(1.0 / math.sqrt(self.hidden_size)))
        combine_w, combine_b = tf.constant(self.combine_w), tf.constant(self.combine_b)

        def cell(x, state):
            h, (next_h, next_c) = lstm(x, state[:2])
            window = tf.concat([state[2][1:], h[None]], axis=0)  # [W, 1, H]
            filled = tf.concat([state[3][1:], tf.ones_like(state[3][:1])], axis=0)  # [W, 1, 1]
            scores = tf.reduce_sum(window * tf.matmul(h, query)[None], axis=-1, keepdims=True)  # [W, 1, 1]
            masked = tf.reshape(scores + (filled - 1.0) * MASK_SCORE, [1, self.window])
            attention = tf.reshape(tf.nn.softmax(masked), [self.window, 1, 1])
            context = tf.reduce_sum(attention * window, axis=0)  # [1, H]
            y = tf.tanh(tf.matmul(tf.concat([h, context], axis=-1), combine_w) + combine_b)
            return y, [next_h, next_c, window, filled]

        return cell


@dataclass
class ConvStepWeights(StepWeights):
    """training.models.ConvLSTMLM's step: a causal convolution over the last K embeddings, tanh, the LSTM."""

    conv_w: np.ndarray  # [K * E, E]: row k * E + e is input slot k (oldest first), embedding dim e
    conv_b: np.ndarray  # [E]
    width: int  # K tokens

    @property
    def embedding_dim(self) -> int:
        return self.embedding.shape[1]

    @property
    def state_layout(self) -> StateLayout:
        past = [("past", [self.width - 1, "batch", self.embedding_dim])] if self.width > 1 else []
        return [*super().state_layout, *past]  # past: the last K-1 embeddings, oldest first

    def register_torch(self, module) -> None:
        import torch

        module.register_buffer("conv_w", torch.from_numpy(self.conv_w))
        module.register_buffer("conv_b", torch.from_numpy(self.conv_b))
        super().register_torch(module)

    def torch_cell(self, module, x, state) -> tuple:
        import torch

        past = list(state[2].unbind(0)) if self.width > 1 else []  # K-1 x [B, E]
        # The K slots side by side, [B, K * E]: the convolution is one matrix product.
        features = torch.tanh(torch.cat([*past, x], dim=-1) @ module.conv_w + module.conv_b)
        y, next_state = super().torch_cell(module, features, state[:2])
        if self.width > 1:
            next_state.append(torch.cat([state[2][1:], x[None]], dim=0))  # [K-1, B, E]
        return y, next_state

    def tf_cell(self, tf):
        lstm = super().tf_cell(tf)
        conv_w, conv_b = tf.constant(self.conv_w), tf.constant(self.conv_b)

        def cell(x, state):
            past = tf.unstack(state[2], axis=0) if self.width > 1 else []
            features = tf.tanh(tf.matmul(tf.concat([*past, x], axis=-1), conv_w) + conv_b)
            y, next_state = lstm(features, state[:2])
            if self.width > 1:
                next_state.append(tf.concat([state[2][1:], x[None]], axis=0))
            return y, next_state

        return cell


# What the TFLite attention step subtracts from an unfilled slot's score (0: the slot
# holds zeros) before tf.nn.softmax. That slot's weight is then exp(-50 - s) of the best
# filled slot's, s being that slot's score: under 1e-6 unless s < -36, which verification
# would show. The PyTorch step's -inf would set the int16 range of the masked scores in
# the 16x8 file; 50 keeps its step near 1e-3.
MASK_SCORE = 50.0


def weights_of(model):
    """The weights of a model (eval mode) as float32 numpy arrays, in its arch's step weights class."""
    config = model.config
    if config.arch == "transformer":
        from export.transformer_step import transformer_weights_of

        return transformer_weights_of(model)
    # Copies: the arrays must not share memory with the model's parameters.
    params = {name: p.detach().float().cpu().numpy().copy() for name, p in model.state_dict().items()}
    embedding, head = embedding_and_head(params, config.tie_embeddings)
    layers = [
        LayerWeights(
            w_ih=params[f"rnn.weight_ih_l{k}"].T.copy(),
            w_hh=params[f"rnn.weight_hh_l{k}"].T.copy(),
            b_ih=params[f"rnn.bias_ih_l{k}"],
            b_hh=params[f"rnn.bias_hh_l{k}"],
        )
        for k in range(config.num_layers)
    ]
    common = {"arch": config.arch, "embedding": embedding, "layers": layers, "head": head}
    if config.arch == "lstm-attention":
        return AttentionStepWeights(
            **common,
            query=params["query.weight"].T.copy(),
            combine_w=params["combine.weight"].T.copy(),
            combine_b=params["combine.bias"],
            window=config.window,
        )
    if config.arch == "cnn-lstm":
        # Conv1d weight [out E, in E, K] -> [K * E in, E out], slot-major: one product over the K slots side by side.
        conv = params["conv.weight"]
        conv_w = conv.transpose(2, 1, 0).reshape(-1, conv.shape[0]).copy()
        return ConvStepWeights(**common, conv_w=conv_w, conv_b=params["conv.bias"], width=config.window)
    return StepWeights(**common)


def embedding_and_head(params: dict[str, np.ndarray], tied: bool) -> tuple[np.ndarray, list]:
    """The lookup table [V, E] and the head's dense layers, from a model's state dict as numpy arrays."""
    embedding = params["embedding.weight"]
    if tied:
        # The embedding appears twice in every file: as the lookup table and,
        # transposed, as the output matrix. Sharing one tensor would need a
        # transpose at run time, which no quantizer folds into the product.
        head = [
            (params["projection.weight"].T.copy(), params["projection.bias"]),
            (embedding.T.copy(), params["output_bias"]),
        ]
    else:
        head = [(params["output.weight"].T.copy(), params["output.bias"])]
    return embedding, head


def torch_step_module(weights):
    """A torch module computing one step: (token_ids [B] int32, *state) -> (logits [B, V], *next state).

    The state in `weights.state_layout` order, each tensor with the batch on axis 1.
    """
    import torch
    from torch import nn

    class StepModule(nn.Module):
        # Weights are buffers with plain names, so the exported graph's
        # initializers read as what they are (layer0_w_ih, head1_w, ...).
        def __init__(self):
            super().__init__()
            self.register_buffer("embedding", torch.from_numpy(weights.embedding))
            weights.register_torch(self)
            for k, (w, b) in enumerate(weights.head):
                self.register_buffer(f"head{k}_w", torch.from_numpy(w))
                self.register_buffer(f"head{k}_b", torch.from_numpy(b))

        def forward(self, token_ids, *state):
            x = self.embedding[token_ids.long()]  # [B, E]
            x, next_state = weights.torch_cell(self, x, state)
            for k in range(len(weights.head)):
                x = x @ getattr(self, f"head{k}_w") + getattr(self, f"head{k}_b")
            return (x, *next_state)

    return StepModule().eval()


def zero_state(weights, batch: int) -> list[np.ndarray]:
    """The start-of-text state for `batch` texts: zeros in the shapes of `weights.state_layout`."""
    return [np.zeros([batch if d == "batch" else d for d in shape], np.float32) for _, shape in weights.state_layout]


def _layer_arrays(cell: str, layer: LayerWeights) -> tuple[np.ndarray, ...]:
    # As in the PyTorch step module: an LSTM's two biases fold into one.
    if cell == "lstm":
        return (layer.w_ih, layer.w_hh, layer.b_ih + layer.b_hh)
    return (layer.w_ih, layer.w_hh, layer.b_ih, layer.b_hh)


def _lstm_cell(x, h, c, w_ih, w_hh, b, hidden: int):
    import torch

    # A fixed split size exports as one Split node; chunk() or h.shape as shape arithmetic.
    i, f, g, o = (x @ w_ih + b + h @ w_hh).split(hidden, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, hidden: int):
    import torch

    xr, xz, xn = (x @ w_ih + b_ih).split(hidden, dim=-1)
    hr, hz, hn = (h @ w_hh + b_hh).split(hidden, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h

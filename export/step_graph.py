"""One step of a RecurrentLM, written as matrix products and gate nonlinearities.

Shapes: B batch, E embedding dim, H hidden size, L layers, V vocabulary size,
G gate width (4H for an LSTM, 3H for a GRU).

A fused LSTM/GRU operator does not quantize in every format (TensorFlow turns
a Keras LSTM that exposes its state into a WHILE loop that full-integer
quantization rejects), so every exported graph spells the cell out. The
weights come from the trained model once, as numpy arrays laid out for
`x @ w`, and both the ONNX and the TFLite builders read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LayerWeights:
    w_ih: np.ndarray  # [E or H, G], gates in PyTorch's order: LSTM i, f, g, o; GRU r, z, n
    w_hh: np.ndarray  # [H, G]
    b_ih: np.ndarray  # [G]
    b_hh: np.ndarray  # [G]


@dataclass
class StepWeights:
    arch: str  # lstm or gru
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
    def state_names(self) -> list[str]:
        return ["h", "c"] if self.arch == "lstm" else ["h"]


def weights_of(model) -> StepWeights:
    """The weights of a RecurrentLM (eval mode) as float32 numpy arrays."""
    config = model.config
    # Copies: the arrays must not share memory with the model's parameters.
    params = {name: p.detach().float().cpu().numpy().copy() for name, p in model.state_dict().items()}
    layers = [
        LayerWeights(
            w_ih=params[f"rnn.weight_ih_l{k}"].T.copy(),
            w_hh=params[f"rnn.weight_hh_l{k}"].T.copy(),
            b_ih=params[f"rnn.bias_ih_l{k}"],
            b_hh=params[f"rnn.bias_hh_l{k}"],
        )
        for k in range(config.num_layers)
    ]
    embedding = params["embedding.weight"]
    if config.tie_embeddings:
        # The embedding appears twice in every file: as the lookup table and,
        # transposed, as the output matrix. Sharing one tensor would need a
        # transpose at run time, which no quantizer folds into the product.
        head = [
            (params["projection.weight"].T.copy(), params["projection.bias"]),
            (embedding.T.copy(), params["output_bias"]),
        ]
    else:
        head = [(params["output.weight"].T.copy(), params["output.bias"])]
    return StepWeights(arch=config.arch, embedding=embedding, layers=layers, head=head)


def torch_step_module(weights: StepWeights):
    """A torch module computing one step: (token_ids [B] int32, *state [L, B, H]) -> (logits [B, V], *next state)."""
    import torch
    from torch import nn

    class StepModule(nn.Module):
        # Weights are buffers with plain names, so the exported graph's
        # initializers read as what they are (layer0_w_ih, head1_w, ...).
        def __init__(self):
            super().__init__()
            self.register_buffer("embedding", torch.from_numpy(weights.embedding))
            for k, layer in enumerate(weights.layers):
                self.register_buffer(f"layer{k}_w_ih", torch.from_numpy(layer.w_ih))
                self.register_buffer(f"layer{k}_w_hh", torch.from_numpy(layer.w_hh))
                if weights.arch == "lstm":
                    # An LSTM adds both biases to every gate, so one sum will do; a
                    # GRU multiplies the hidden part of its n gate by r, so keeps both.
                    self.register_buffer(f"layer{k}_b", torch.from_numpy(layer.b_ih + layer.b_hh))
                else:
                    self.register_buffer(f"layer{k}_b_ih", torch.from_numpy(layer.b_ih))
                    self.register_buffer(f"layer{k}_b_hh", torch.from_numpy(layer.b_hh))
            for k, (w, b) in enumerate(weights.head):
                self.register_buffer(f"head{k}_w", torch.from_numpy(w))
                self.register_buffer(f"head{k}_b", torch.from_numpy(b))

        def _layer(self, k: int) -> list:
            names = ("w_ih", "w_hh", "b") if weights.arch == "lstm" else ("w_ih", "w_hh", "b_ih", "b_hh")
            return [getattr(self, f"layer{k}_{name}") for name in names]

        def forward(self, token_ids, *state):
            hidden = weights.hidden_size
            x = self.embedding[token_ids.long()]  # [B, E]
            next_h, next_c = [], []
            for k in range(weights.num_layers):
                if weights.arch == "lstm":
                    x, c = _lstm_cell(x, state[0][k], state[1][k], *self._layer(k), hidden)
                    next_c.append(c)
                else:
                    x = _gru_cell(x, state[0][k], *self._layer(k), hidden)
                next_h.append(x)
            for k in range(len(weights.head)):
                x = x @ getattr(self, f"head{k}_w") + getattr(self, f"head{k}_b")
            outputs = [x, torch.stack(next_h)]
            if weights.arch == "lstm":
                outputs.append(torch.stack(next_c))
            return tuple(outputs)

    return StepModule().eval()


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

"""A small fully connected network (the pure-torch counterpart of tcnn's FullyFusedMLP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError

Activation = Literal["relu", "softplus", "silu", "sigmoid", "none"]
ACTIVATIONS = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "none": nn.Identity,
}


class MLP(Configurable, nn.Module):
    """``n_input → [n_neurons]×n_hidden_layers → n_output`` with ReLU-family activations.

    Input (N, n_input) → output (N, n_output), dtype of the input.
    """

    @dataclass
    class Config:
        n_neurons: int = 64
        """Width of each hidden layer."""
        n_hidden_layers: int = 1
        """Number of hidden layers."""
        activation: Activation = "relu"
        """Activation of the hidden layers."""
        output_activation: Activation = "none"
        """Activation of the output layer."""
        bias: bool = True
        """Use biases (tcnn's fully fused MLP has none)."""

    def __init__(self, n_input: int, n_output: int, cfg=None, where: str = "mlp") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        c = self.cfg
        dims = [n_input] + [c.n_neurons] * c.n_hidden_layers + [n_output]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=c.bias))
            last = i == len(dims) - 2
            layers.append(ACTIVATIONS[c.output_activation if last else c.activation]())
        self.net = nn.Sequential(*layers)
        self.n_output_dims = n_output

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def get_activation(name: str):
    """Pointwise activation by name for densities/colours: none|exp|softplus|sigmoid|trunc_exp."""
    if name == "none":
        return lambda x: x
    if name == "exp":
        return torch.exp
    if name == "trunc_exp":
        return _TruncExp.apply
    if name == "softplus":
        return nn.functional.softplus
    if name == "sigmoid":
        return torch.sigmoid
    raise UserError(f"unknown activation '{name}'; choose none|exp|trunc_exp|softplus|sigmoid")


class _TruncExp(torch.autograd.Function):
    """exp(x) with the gradient of exp(min(x, 15)) (Instant-NGP's density activation)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15))

"""Backgrounds: ``background(dirs (B,H,W,3), generator) -> rgb (B,H,W,3)`` in [0,1], dirs = unit
ray directions; ``generator`` drives the random colours of the training-time augmentations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable, Probability
from ..core.errors import UserError
from ..ops.encodings import make_encoding
from ..ops.mlp import MLP


class Background(Configurable, nn.Module):
    """What renderers call: ``background(dirs (B,H,W,3), generator=None) -> rgb (B,H,W,3)``."""

    def forward(self, dirs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        raise NotImplementedError


class SolidBackground(Background):
    """A constant colour (white by default)."""

    @dataclass
    class Config:
        color: tuple[float, float, float] = (1.0, 1.0, 1.0)
        """RGB in [0,1]."""

    def __init__(self, cfg=None, where: str = "background") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)

    def forward(self, dirs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        color = torch.tensor(self.cfg.color, dtype=dirs.dtype, device=dirs.device)
        return color.expand(*dirs.shape[:-1], 3)


class RandomColorBackground(SolidBackground):
    """While training, with probability ``random_prob`` a view gets another colour (against the
    background leaking into the object): a uniform random one, or ``1 − color`` (``inverted``:
    DreamGaussian's white/black); otherwise, and in eval, ``color``."""

    @dataclass
    class Config(SolidBackground.Config):
        random_prob: Probability = 0.5
        """Probability per view of the other colour while training."""
        other: Literal["uniform", "inverted"] = "uniform"
        """The other colour: uniform random RGB, or the inverse of ``color``."""

    def forward(self, dirs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        out = super().forward(dirs)
        if not self.training:
            return out
        b = dirs.shape[0]
        if self.cfg.other == "inverted":
            rand = 1.0 - out[:, 0, 0]
        else:
            rand = torch.rand(b, 3, generator=generator).to(dirs)
        use = (torch.rand(b, generator=generator) < self.cfg.random_prob).to(dirs.device)
        color = torch.where(use[:, None], rand, out[:, 0, 0])
        return color[:, None, None, :].expand_as(out)


class AzimuthBackdrop(SolidBackground):
    """A world-fixed backdrop whose brightness varies with the ray's world azimuth θ (about the
    z-up axis): ``color · (base + amplitude · cos(period · θ))``. Every view then shows which way
    it faces (modulo 360°/``period``) as low-frequency shading that survives heavy noise; the toy
    SD prior is trained over it so that its denoised targets agree on a yaw (README, *The toy
    world*). Period 4 matches the cube's symmetry."""

    @dataclass
    class Config(SolidBackground.Config):
        base: float = 0.82
        """Mean brightness."""
        amplitude: float = 0.18
        """Brightness swing (base ± amplitude stays within [0, 1])."""
        period: int = 4
        """Bright/dark cycles per turn."""

    def __init__(self, cfg=None, where: str = "background") -> None:
        super().__init__(cfg, where)
        c = self.cfg
        if not (c.base - abs(c.amplitude) >= 0 and c.base + abs(c.amplitude) <= 1):
            raise UserError(f"{where}: base ± amplitude must stay within [0, 1], got {c.base} ± {c.amplitude}")

    def forward(self, dirs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        theta = torch.atan2(dirs[..., 1], dirs[..., 0])
        brightness = self.cfg.base + self.cfg.amplitude * torch.cos(self.cfg.period * theta)
        return super().forward(dirs) * brightness[..., None]


class NeuralEnvironmentMap(Background):
    """An MLP of the view direction (frequency-encoded) → sigmoid colour (threestudio's
    neural-environment-map background). With ``random_aug`` it is replaced by a random solid
    colour per view with that probability while training."""

    @dataclass
    class Config:
        n_frequencies: int = 6
        """Frequencies of the direction encoding."""
        n_neurons: int = 32
        """MLP width."""
        n_hidden_layers: int = 2
        """MLP depth."""
        random_aug: float = 0.0
        """Probability of a random solid colour per view while training."""

    def __init__(self, cfg=None, where: str = "background") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        c = self.cfg
        self.encoding = make_encoding({"otype": "Frequency", "n_frequencies": c.n_frequencies}, 3)
        self.mlp = MLP(
            self.encoding.n_output_dims,
            3,
            {"n_neurons": c.n_neurons, "n_hidden_layers": c.n_hidden_layers, "output_activation": "sigmoid"},
            where=f"{where}.mlp",
        )

    def forward(self, dirs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        shape = dirs.shape
        x = (dirs.reshape(-1, 3) + 1.0) / 2.0
        out = self.mlp(self.encoding(x)).reshape(*shape[:-1], 3)
        if self.training and self.cfg.random_aug > 0:
            b = shape[0]
            rand = torch.rand(b, 3, generator=generator).to(dirs)[:, None, None, :].expand_as(out)
            use = (torch.rand(b, generator=generator) < self.cfg.random_aug).to(dirs.device)
            out = torch.where(use[:, None, None, None], rand, out)
        return out

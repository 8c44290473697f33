"""Materials turn geometry features into colours.

Call: ``material(features (N,F), viewdirs (N,3), normal (N,3)|None, light_position (N,3),
position (N,3), shading) -> rgb (N,3)`` in [0,1]. ``shading`` is one of ``albedo`` (unlit),
``diffuse`` (lit) or ``textureless`` (lit white: the geometry-only look used against texture
cheating). :meth:`appearance` gives the maps baked at export (``albedo`` and, for PBR,
``roughness``/``metallic``). ``training_shading(step, generator)`` picks the shading of a
training step (DreamFusion's augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable, NonNegativeInt, Probability
from ..core.errors import UserError
from ..ops.mlp import get_activation

SHADINGS = ("albedo", "diffuse", "textureless")


class Material(Configurable, nn.Module):
    """Base: albedo = activation(features[:, :3]); subclasses add lighting."""

    @dataclass
    class Config:
        albedo_activation: Literal["sigmoid", "none"] = "sigmoid"
        """Activation from features to albedo."""

    requires_normal = False
    n_feature_dims = 3

    def __init__(self, cfg=None, where: str = "material") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self._act = get_activation(self.cfg.albedo_activation)

    def albedo(self, features: Tensor) -> Tensor:
        return self._act(features[..., :3]).clamp(0.0, 1.0)

    def appearance(self, features: Tensor) -> dict[str, Tensor]:
        return {"albedo": self.albedo(features)}

    def training_shading(self, global_step: int, generator: Optional[torch.Generator] = None) -> str:
        return "albedo"

    def forward(
        self,
        features: Tensor,
        viewdirs: Tensor,
        normal: Optional[Tensor],
        light_position: Tensor,
        position: Tensor,
        shading: str = "albedo",
    ) -> Tensor:
        return self.albedo(features)


class NoMaterial(Material):
    """Raw colour: the features' first three channels through the activation; no lighting."""


class DiffuseWithPointLight(Material):
    """Lambertian: ``albedo · (ambient + diffuse · max(n·l, 0))`` with a point light."""

    @dataclass
    class Config(Material.Config):
        ambient_light_color: float = 0.1
        """Ambient light intensity (grey)."""
        diffuse_light_color: float = 0.9
        """Point light intensity (grey)."""
        ambient_only_steps: NonNegativeInt = 1000
        """Training steps at the start that use unlit albedo only."""
        textureless_prob: Probability = 0.5
        """After that, probability of a textureless (white albedo) step."""
        albedo_prob: Probability = 0.0
        """...and of an unlit-albedo step; the rest are lit ('diffuse')."""
        soft_shading: bool = False
        """Magic3D's soft shading: each lit training step draws its diffuse intensity d ~ U[0, 1]
        and ambient 1 − d instead of the fixed colours (evaluation keeps them)."""

    requires_normal = True

    def __init__(self, cfg=None, where: str = "material") -> None:
        super().__init__(cfg, where)
        self._step_diffuse: Optional[float] = None  # this training step's soft-shading draw

    def training_shading(self, global_step: int, generator: Optional[torch.Generator] = None) -> str:
        """Pick the step's shading; with ``soft_shading`` a lit step also draws its light mix."""
        shading = self._pick_shading(global_step, generator)
        lit = shading != "albedo" and self.cfg.soft_shading
        self._step_diffuse = torch.rand((), generator=generator).item() if lit else None
        return shading

    def _pick_shading(self, global_step: int, generator: Optional[torch.Generator]) -> str:
        c = self.cfg
        if global_step < c.ambient_only_steps:
            return "albedo"
        r = torch.rand((), generator=generator).item()
        if r < c.textureless_prob:
            return "textureless"
        if r < c.textureless_prob + c.albedo_prob:
            return "albedo"
        return "diffuse"

    def light_colors(self) -> tuple[float, float]:
        """(ambient, diffuse) intensities: the step's soft-shading draw while training, else the config's."""
        if self.training and self._step_diffuse is not None:
            return 1.0 - self._step_diffuse, self._step_diffuse
        return self.cfg.ambient_light_color, self.cfg.diffuse_light_color

    def forward(
        self,
        features: Tensor,
        viewdirs: Tensor,
        normal: Optional[Tensor],
        light_position: Tensor,
        position: Tensor,
        shading: str = "diffuse",
    ) -> Tensor:
        albedo = self.albedo(features)
        if shading == "albedo":
            return albedo
        if shading not in SHADINGS:
            raise UserError(f"unknown shading '{shading}'; choose one of {SHADINGS}")
        if normal is None:
            raise ValueError("DiffuseWithPointLight needs normals for lit shading")
        light_dir = nn.functional.normalize(light_position - position, dim=-1)
        lambert = (normal * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
        ambient, diffuse = self.light_colors()
        light = ambient + diffuse * lambert
        if shading == "textureless":
            albedo = torch.ones_like(albedo)
        return (albedo * light).clamp(0.0, 1.0)


class PBRMaterial(DiffuseWithPointLight):
    """Albedo, roughness and metallic from features (F ≥ 5), GGX specular + Lambert diffuse.

    Features: [0:3] albedo logits, [3] roughness logit, [4] metallic logit (sigmoid).
    """

    n_feature_dims = 5

    def appearance(self, features: Tensor) -> dict[str, Tensor]:
        return {
            "albedo": self.albedo(features),
            "roughness": torch.sigmoid(features[..., 3:4]).clamp(0.04, 1.0),
            "metallic": torch.sigmoid(features[..., 4:5]),
        }

    def forward(
        self,
        features: Tensor,
        viewdirs: Tensor,
        normal: Optional[Tensor],
        light_position: Tensor,
        position: Tensor,
        shading: str = "diffuse",
    ) -> Tensor:
        if shading != "diffuse":
            return super().forward(features, viewdirs, normal, light_position, position, shading)
        maps = self.appearance(features)
        albedo, rough, metal = maps["albedo"], maps["roughness"], maps["metallic"]
        n = normal
        l = nn.functional.normalize(light_position - position, dim=-1)  # noqa: E741
        v = -viewdirs
        h = nn.functional.normalize(l + v, dim=-1)
        ndl = (n * l).sum(-1, keepdim=True).clamp(min=0.0)
        ndv = (n * v).sum(-1, keepdim=True).clamp(min=1e-4)
        ndh = (n * h).sum(-1, keepdim=True).clamp(min=0.0)
        vdh = (v * h).sum(-1, keepdim=True).clamp(min=0.0)
        a2 = (rough * rough) ** 2
        d = a2 / (torch.pi * ((ndh * ndh) * (a2 - 1.0) + 1.0) ** 2)
        k = (rough + 1.0) ** 2 / 8.0
        g = (ndl / (ndl * (1 - k) + k)) * (ndv / (ndv * (1 - k) + k))
        f0 = 0.04 * (1 - metal) + albedo * metal
        f = f0 + (1 - f0) * (1 - vdh) ** 5
        spec = d * g * f / (4 * ndv * ndl.clamp(min=1e-4))
        diffuse = (1 - metal) * albedo
        ambient, light = self.light_colors()
        rgb = ambient * albedo + light * ndl * (diffuse + spec)
        return rgb.clamp(0.0, 1.0)

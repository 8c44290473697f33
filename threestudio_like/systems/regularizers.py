"""Loss terms computed from a training step's render: the regularizers of DreamFusion,
Magic3D and ProlificDreamer as small configurable components.

Each term is ``term(ctx: StepContext) -> dict[name, scalar tensor]``; the system weights every
returned name with ``loss.<name>`` from the stage config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.schedule import Updateable

if TYPE_CHECKING:  # pragma: no cover
    from .score_distillation import StepContext


class LossTerm(Configurable, Updateable, nn.Module):
    """Base class: ``name`` (the config key) is the default loss name.

    The system calls :meth:`forward` every step; before training, :meth:`reference_image` (a term
    that holds the stage's input image provides it to view-conditioned guidance) and
    :meth:`setup_guidance` (a term that scores with a prior of its own loads it).
    """

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Any = None, where: str = "term", name: str = "") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.name = name or type(self).__name__

    def reference_image(self) -> Optional[tuple[Tensor, float, float, float]]:
        """The stage's input image (1,H,W,3) over white with its camera (elevation°, azimuth°,
        distance), or None."""
        return None

    def setup_guidance(self, device: torch.device, reference: Optional[tuple[Tensor, float, float, float]]) -> None:
        """Load the pretrained models the term scores with (only for stages that train)."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class OrientationLoss(LossTerm):
    """DreamFusion's orientation loss: Σ_samples w·max(0, n·d)² / #rays — penalises normals
    facing away from the camera on visible samples (volume renders only)."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        ex = ctx.render.extras
        w, n, d = ex["weights"], ex["normal_points"], ex["dirs"]
        rays = ctx.render.opacity.numel()
        value = (w.detach() * (n * d).sum(-1, keepdim=True).clamp(min=0.0) ** 2).sum() / rays
        return {self.name: value}


class SparsityLoss(LossTerm):
    """Mean of sqrt(opacity² + 0.01): pushes empty space to zero opacity."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        return {self.name: (ctx.render.opacity**2 + 0.01).sqrt().mean()}


class OpaqueLoss(LossTerm):
    """Binary entropy of the opacity: pushes every pixel to fully empty or fully opaque."""

    @dataclass
    class Config:
        eps: float = 1e-3
        """Clamp of the opacity away from 0 and 1."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        o = ctx.render.opacity.clamp(self.cfg.eps, 1.0 - self.cfg.eps)
        return {self.name: -(o * torch.log(o) + (1 - o) * torch.log(1 - o)).mean()}


class NormalConsistencyLoss(LossTerm):
    """Mesh stages: mean (1 − cos) between the normals of faces that share an edge."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        mesh = ctx.render.extras["mesh"]
        return {self.name: normal_consistency(mesh.v_pos, mesh.t_pos_idx)}


class LaplacianSmoothnessLoss(LossTerm):
    """Mesh stages: mean squared uniform-Laplacian of the vertex positions."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        mesh = ctx.render.extras["mesh"]
        return {self.name: laplacian_smoothness(mesh.v_pos, mesh.t_pos_idx)}


def face_adjacency(faces: Tensor) -> Tensor:
    """(F,3) faces → (E,2) pairs of face indices sharing an edge (manifold edges only)."""
    f = faces.shape[0]
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0).sort(dim=1).values
    face_id = torch.arange(f, device=faces.device).repeat(3)
    key = edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1]
    order = torch.argsort(key)
    key, face_id = key[order], face_id[order]
    same = key[1:] == key[:-1]
    return torch.stack([face_id[:-1][same], face_id[1:][same]], dim=1)


def normal_consistency(v_pos: Tensor, faces: Tensor) -> Tensor:
    if faces.numel() == 0:
        return v_pos.sum() * 0.0
    v = v_pos[faces]
    n = torch.nn.functional.normalize(torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1)
    pairs = face_adjacency(faces)
    if pairs.numel() == 0:
        return v_pos.sum() * 0.0
    return (1.0 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_smoothness(v_pos: Tensor, faces: Tensor) -> Tensor:
    if faces.numel() == 0:
        return v_pos.sum() * 0.0
    v = v_pos.shape[0]
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    e = torch.cat([e, e.flip(1)], 0)
    nbr_sum = torch.zeros_like(v_pos).index_add(0, e[:, 0], v_pos[e[:, 1]])
    deg = torch.zeros(v, dtype=v_pos.dtype, device=v_pos.device).index_add(
        0, e[:, 0], torch.ones(e.shape[0], dtype=v_pos.dtype, device=v_pos.device)
    )
    lap = v_pos - nbr_sum / deg.clamp(min=1)[:, None]
    return (lap**2).sum(-1).mean()

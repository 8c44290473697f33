"""Loss terms computed from a training step's render: the regularizers of DreamFusion,
Magic3D and ProlificDreamer as small configurable components.

Each term is ``term(ctx: StepContext) -> dict[name, scalar tensor]``; the system weights every
returned name with ``loss.<name>`` from the stage config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from ..core.schedule import Updateable
from ..geometry.base import Mesh

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

    def own_render_pixels(self, step: int) -> int:
        """Pixels of the render the term makes itself at training step ``step`` (its own cameras:
        a reference view, fixed multi-view cameras), all in one render call; 0 for a term that only
        reads the step's render. The memory estimate counts that render's activations from it."""
        return 0

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class OrientationLoss(LossTerm):
    """DreamFusion's orientation loss: Σ_samples w·max(0, n·d)² / N — penalises normals
    facing away from the camera on visible samples (volume renders only)."""

    @dataclass
    class Config:
        normalize_by: Literal["rays", "visible"] = "rays"
        """N: every ray of the batch, or the rays with any opacity (threestudio's)."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        ex = ctx.render.extras
        w, n, d = ex["weights"], ex["normal_points"], ex["dirs"]
        opacity = ctx.render.opacity
        count = opacity.numel() if self.cfg.normalize_by == "rays" else (opacity > 0).sum().clamp(min=1)
        value = (w.detach() * (n * d).sum(-1, keepdim=True).clamp(min=0.0) ** 2).sum() / count
        return {self.name: value}


class NormalSmoothnessLoss(LossTerm):
    """Total variation of the rendered normal image (threestudio's 2D normal smoothness):
    :func:`normal_image_smoothness` of the training views."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        return {self.name: normal_image_smoothness(ctx.render.normal, ctx.render.opacity)}


class NormalPerturbationLoss(LossTerm):
    """threestudio's 3D normal smoothness: mean |n(x) − n(x + δ)| over the volume render's
    samples x, δ ~ N(0, std²) per axis — normals should not change within a small ball."""

    @dataclass
    class Config:
        std: float = 0.01
        """Std of the point jitter δ (world units)."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        ex = ctx.render.extras
        origins = ctx.cameras.rays_o.reshape(-1, 3)[ex["ray_indices"]]
        points = origins + ex["t_mid"] * ex["dirs"]
        jittered = points + self.cfg.std * torch.randn_like(points)
        moved = ctx.system.geometry(jittered, output_normal=True).normal
        return {self.name: (ex["normal_points"] - moved).abs().mean()}


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
    """Mesh stages: mean (1 − cos) between the normals on either side of each edge."""

    @dataclass
    class Config:
        normals: Literal["face", "vertex"] = "face"
        """``face``: the two faces sharing an edge; ``vertex``: the area-weighted vertex normals
        at the edge's two ends (threestudio's)."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        mesh = ctx.render.extras["mesh"]
        if self.cfg.normals == "vertex":
            return {self.name: vertex_normal_consistency(mesh.v_pos, mesh.t_pos_idx)}
        return {self.name: normal_consistency(mesh.v_pos, mesh.t_pos_idx)}


class LaplacianSmoothnessLoss(LossTerm):
    """Mesh stages: size of the uniform Laplacian of the vertex positions."""

    @dataclass
    class Config:
        form: Literal["squared_offset", "umbrella_norm"] = "squared_offset"
        """``squared_offset``: mean ‖v − mean(neighbours)‖²; ``umbrella_norm``: mean
        ‖deg·v − Σ neighbours‖, the norm of L·v with L = D − A (threestudio's)."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        mesh = ctx.render.extras["mesh"]
        if self.cfg.form == "umbrella_norm":
            return {self.name: umbrella_laplacian_norm(mesh.v_pos, mesh.t_pos_idx)}
        return {self.name: laplacian_smoothness(mesh.v_pos, mesh.t_pos_idx)}


def normal_image_smoothness(normal: Optional[Tensor], opacity: Tensor) -> Tensor:
    """Rendered normals (B,H,W,3) (Σ w·n) and opacity (B,H,W,1) → the normal image
    m = (n/‖n‖ + 1)/2 · opacity (black background) and the sum of the means of its squared
    vertical and horizontal neighbour differences."""
    if normal is None:
        raise UserError("the normal smoothness needs rendered normals: set renderer.return_normals=true")
    m = (nn.functional.normalize(normal, dim=-1) + 1.0) / 2.0 * opacity
    return (m[:, 1:] - m[:, :-1]).square().mean() + (m[:, :, 1:] - m[:, :, :-1]).square().mean()


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


def unique_edges(faces: Tensor) -> Tensor:
    """(F,3) faces → (E,2) vertex pairs, each undirected edge once (smaller index first)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0).sort(dim=1).values
    return torch.unique(edges, dim=0)


def vertex_normal_consistency(v_pos: Tensor, faces: Tensor) -> Tensor:
    """Mean over the unique edges of 1 − cos between the area-weighted vertex normals at its ends."""
    if faces.numel() == 0:
        return v_pos.sum() * 0.0
    n = Mesh(v_pos, faces).vertex_normals()
    e = unique_edges(faces)
    return (1.0 - nn.functional.cosine_similarity(n[e[:, 0]], n[e[:, 1]], dim=-1)).mean()


def umbrella_laplacian_norm(v_pos: Tensor, faces: Tensor) -> Tensor:
    """Mean over the vertices of ‖deg(v)·v − Σ_{u ~ v} u‖ (unique neighbours)."""
    if faces.numel() == 0:
        return v_pos.sum() * 0.0
    e = unique_edges(faces)
    e = torch.cat([e, e.flip(1)], 0)
    nbr_sum = torch.zeros_like(v_pos).index_add(0, e[:, 0], v_pos[e[:, 1]])
    deg = torch.zeros(v_pos.shape[0], dtype=v_pos.dtype, device=v_pos.device).index_add(
        0, e[:, 0], torch.ones(e.shape[0], dtype=v_pos.dtype, device=v_pos.device)
    )
    return (deg[:, None] * v_pos - nbr_sum).norm(dim=-1).mean()


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

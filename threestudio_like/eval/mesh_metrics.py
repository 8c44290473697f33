"""A mesh against a ground-truth mesh (IoU, Chamfer, normal consistency, F-score) and the
statistics of an exported asset (components, watertightness, faces, texture size).

Both meshes are in the same frame (our +Z-up world; :func:`load_mesh` turns a +Y-up file into
it). :func:`compare_meshes` samples ``n_points`` points uniformly on each surface (seeded) for the
point metrics, and fills a grid over the box around both for the volumetric IoU
(:func:`~.shape_metrics.grid_inside`, which needs closed meshes to be exact).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..export.axes import from_up_axis
from ..export.mesh_ops import decimate, vertex_components, weld_vertices
from ..geometry.base import Mesh
from .evaluator import Scores
from .shape_metrics import chamfer_distance, fscore, grid_inside, normal_consistency

IOU_RESOLUTION = 64
"""Cells per side of the IoU grid."""
IOU_MAX_FACES = 10000
"""Meshes are decimated to at most this many faces for the IoU's inside test (its cost grows with
grid columns × faces: ~20 s for 10k faces at 64³ on one CPU core)."""
N_POINTS = 10000
"""Surface samples per mesh for Chamfer, F-score and normal consistency."""


def load_mesh(path: str | Path, up_axis: str, where: str) -> Mesh:
    """A mesh file (OBJ, PLY, GLB…: anything trimesh reads) in our +Z-up world, its vertices welded
    (an OBJ splits them along UV seams). ``up_axis``: the file's up axis, ``+Y`` or ``+Z``."""
    from ..geometry.explicit_mesh import load_mesh_file

    v, f = load_mesh_file(path, where=where)
    mesh = Mesh(from_up_axis(torch.as_tensor(v, dtype=torch.float32), up_axis), torch.as_tensor(f, dtype=torch.long))
    return weld_vertices(mesh)


def sample_surface_with_normals(mesh: Mesh, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(n,3) points uniform on the surface (faces drawn by area) and the (n,3) unit normals of the
    faces they lie on."""
    g = torch.Generator().manual_seed(seed)
    v = mesh.v_pos.detach().double().cpu()[mesh.t_pos_idx.cpu()]
    cross = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    face = torch.multinomial(cross.norm(dim=-1), n, replacement=True, generator=g)
    u, w = torch.rand(n, generator=g, dtype=v.dtype), torch.rand(n, generator=g, dtype=v.dtype)
    flip = u + w > 1  # reflect into the triangle
    u, w = torch.where(flip, 1 - u, u), torch.where(flip, 1 - w, w)
    t = v[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])
    return points.float(), torch.nn.functional.normalize(cross[face], dim=-1).float()


def mesh_iou(a: Mesh, b: Mesh, resolution: int = IOU_RESOLUTION) -> float:
    """Volumetric IoU of two closed meshes on a ``resolution``³ grid over the cube (centred at the
    origin) that holds both, 5 % margin; each decimated to :data:`IOU_MAX_FACES` first."""
    extent = 1.05 * float(torch.cat([a.v_pos.detach().abs().cpu(), b.v_pos.detach().abs().cpu()]).max())
    inside_a, inside_b = (grid_inside(decimate(_cpu(m), IOU_MAX_FACES), resolution, extent) for m in (a, b))
    return float((inside_a & inside_b).sum()) / max(float((inside_a | inside_b).sum()), 1.0)


def compare_meshes(
    pred: Mesh, gt: Mesh, tau: float, n_points: int = N_POINTS, resolution: int = IOU_RESOLUTION
) -> Scores:
    """``iou``, ``chamfer``, ``normal_consistency`` and ``fscore`` (at ``tau``, in world units) of
    ``pred`` against ``gt``."""
    p, pn = sample_surface_with_normals(pred, n_points, seed=0)
    q, qn = sample_surface_with_normals(gt, n_points, seed=1)
    return {
        "iou": mesh_iou(pred, gt, resolution),
        "chamfer": chamfer_distance(p, q),
        "normal_consistency": normal_consistency(p, pn, q, qn),
        "fscore": fscore(p, q, tau),
        "fscore_tau": tau,
    }


def is_watertight(faces: np.ndarray) -> bool:
    """Every edge is shared by exactly two faces (vertices welded)."""
    if len(faces) == 0:
        return False
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


def mesh_statistics(mesh: Mesh, texture: Optional[str | Path] = None) -> Scores:
    """``faces``, ``vertices`` (welded), ``components`` (connected by shared vertices),
    ``watertight`` (1/0) and, with a texture image, ``texture_width``/``texture_height``."""
    welded = weld_vertices(mesh)
    f = welded.t_pos_idx.cpu().numpy()
    out: Scores = {
        "faces": int(len(f)),
        "vertices": int(welded.num_vertices),
        "components": int(vertex_components(welded.num_vertices, f)[0]) if len(f) else 0,
        "watertight": int(is_watertight(f)),
    }
    if texture is not None and Path(texture).is_file():
        from PIL import Image

        with Image.open(texture) as image:
            out["texture_width"], out["texture_height"] = image.size
    return out


def _cpu(mesh: Mesh) -> Mesh:
    return Mesh(mesh.v_pos.detach().float().cpu(), mesh.t_pos_idx.cpu())

"""Binary little-endian PLY: point clouds and vertex-coloured triangle meshes.

Vertex properties ``x y z`` (float32), optional ``nx ny nz`` (float32) and ``red green blue``
(uchar); faces as ``list uchar int vertex_indices``; ``comment`` header lines (up axis, units).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from torch import Tensor

from ..core.atomic import atomic_write
from ..geometry.base import Mesh


def _numpy(x: Optional[Tensor | np.ndarray]) -> Optional[np.ndarray]:
    if x is None:
        return None
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _vertex_block(
    points: np.ndarray, normals: Optional[np.ndarray], colors: Optional[np.ndarray]
) -> tuple[list[str], bytes]:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    props = ["property float x", "property float y", "property float z"]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        props += ["property float nx", "property float ny", "property float nz"]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    rec = np.empty(len(points), dtype=fields)
    for k, name in enumerate("xyz"):
        rec[name] = points[:, k]
    if normals is not None:
        for k, name in enumerate(("nx", "ny", "nz")):
            rec[name] = normals[:, k]
    if colors is not None:
        c = colors if colors.dtype == np.uint8 else (np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8)
        for k, name in enumerate(("red", "green", "blue")):
            rec[name] = c[:, k]
    return props, rec.tobytes()


def _check(name: str, array: Optional[np.ndarray], n: int, width: int) -> None:
    if array is not None and array.shape != (n, width):
        raise ValueError(f"PLY {name} must be ({n},{width}), got {array.shape}")


def write_ply_points(
    path: str | Path,
    points: Tensor | np.ndarray,
    colors: Optional[Tensor | np.ndarray] = None,
    normals: Optional[Tensor | np.ndarray] = None,
) -> Path:
    """Point cloud: points (N,3), colors (N,3) float in [0,1] or uint8, normals (N,3)."""
    pts = _numpy(points).astype(np.float32)
    cols, nrms = _numpy(colors), _numpy(normals)
    _check("points", pts, len(pts), 3)
    _check("colors", cols, len(pts), 3)
    _check("normals", nrms, len(pts), 3)
    props, data = _vertex_block(pts, nrms, cols)
    header = (
        "\n".join(
            [
                "ply",
                "format binary_little_endian 1.0",
                "comment threestudio_like",
                f"element vertex {len(pts)}",
                *props,
                "end_header",
            ]
        )
        + "\n"
    )
    return atomic_write(path, lambda f: (f.write(header.encode("ascii")), f.write(data)))


def write_ply_mesh(
    path: str | Path,
    mesh: Mesh,
    vertex_colors: Optional[Tensor | np.ndarray] = None,
    comments: Sequence[str] = (),
) -> Path:
    """Triangle mesh with per-vertex normals and optional colours (V,3) float in [0,1] or uint8;
    ``comments`` become ``comment`` lines of the header."""
    pts = _numpy(mesh.v_pos).astype(np.float32)
    nrms = _numpy(mesh.vertex_normals()).astype(np.float32)
    cols = _numpy(vertex_colors)
    _check("vertex_colors", cols, len(pts), 3)
    props, data = _vertex_block(pts, nrms, cols)
    faces = _numpy(mesh.t_pos_idx).astype(np.int64)
    rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    rec["n"] = 3
    rec["idx"] = faces
    header = (
        "\n".join(
            [
                "ply",
                "format binary_little_endian 1.0",
                *(f"comment {line}" for line in ["threestudio_like", *comments]),
                f"element vertex {len(pts)}",
                *props,
                f"element face {len(faces)}",
                "property list uchar int vertex_indices",
                "end_header",
            ]
        )
        + "\n"
    )
    return atomic_write(path, lambda f: (f.write(header.encode("ascii")), f.write(data), f.write(rec.tobytes())))

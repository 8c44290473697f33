"""The export entry point: cleanup → UV atlas → texture bake → OBJ/MTL/PNG, GLB, PLY.

``export_mesh(mesh, appearance_fn, out_dir, cfg)`` returns the written paths by role:
``obj``, ``mtl``, ``albedo``/``roughness``/``metallic`` (PNGs beside the OBJ), ``glb``, ``ply``.
Textures are baked in world coordinates, before the output transforms (unit cube, up axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from ..core.config import parse_structured
from ..core.errors import UserError
from ..geometry.base import Mesh
from ..ops.rasterize import Rasterizer
from .axes import UpAxis, to_up_axis, unit_cube_transform
from .bake import AppearanceFn, bake_textures
from .gltf import write_glb
from .mesh_ops import clean_mesh
from .obj import write_obj
from .ply import write_ply_mesh
from .uv_atlas import uv_unwrap

FORMATS = ("obj", "glb", "ply")


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: ["obj", "glb"])
    """Files to write: ``obj`` (OBJ+MTL+PNG maps), ``glb`` (glTF binary), ``ply`` (vertex-coloured mesh)."""
    basename: str = "model"
    """File stem: ``<basename>.obj``, ``<basename>.glb``, ``<basename>_albedo.png`` ..."""
    texture_size: int = 1024
    """Side of the square texture maps in texels."""
    uv_padding: int = 4
    """Texels xatlas leaves around each UV chart."""
    dilate_px: int = 8
    """Rings of texels the baked colours are grown across chart seams."""
    min_component_faces: int = 0
    """Remove connected components with fewer faces than this (the largest always stays)."""
    min_component_area_fraction: float = 0.01
    """Remove connected components with less than this fraction of the total surface area."""
    decimate_target: int = 0
    """Reduce to at most this many faces (vertex clustering); 0 keeps all faces."""
    orient_normals: bool = True
    """Make the winding consistent and the faces point outward (signed volume > 0)."""
    scale_to_unit_cube: bool = False
    """Centre the bounding box at the origin and scale its longest side to 1."""
    up_axis: UpAxis = "+Z"
    """Up axis of OBJ and PLY files: ``+Z`` (our world frame, unchanged) or ``+Y``."""
    glb_up_axis: UpAxis = "+Y"
    """Up axis of the GLB: ``+Y`` as glTF specifies (rotated from our +Z-up world), or ``+Z``."""
    rasterizer: Literal["auto", "torch", "nvdiffrast"] = "auto"
    """Rasterizer for UV baking (ops/rasterize.py)."""


def _validate(cfg: ExportConfig) -> None:
    unknown = [f for f in cfg.formats if f not in FORMATS]
    if unknown or not cfg.formats:
        raise UserError(f"export.formats must be a non-empty list of {'|'.join(FORMATS)}, got {list(cfg.formats)}")
    if cfg.texture_size < 8 or cfg.texture_size > 16384:
        raise UserError(f"export.texture_size must be between 8 and 16384 texels, got {cfg.texture_size}")
    if cfg.uv_padding < 0 or cfg.dilate_px < 0 or cfg.decimate_target < 0 or cfg.min_component_faces < 0:
        raise UserError("export.uv_padding, dilate_px, decimate_target and min_component_faces must be >= 0")
    if 0 < cfg.decimate_target < 4:
        raise UserError(f"export.decimate_target must be 0 (off) or at least 4 faces, got {cfg.decimate_target}")
    if not 0.0 <= cfg.min_component_area_fraction <= 1.0:
        raise UserError(f"export.min_component_area_fraction must be in [0, 1], got {cfg.min_component_area_fraction}")


def _transformed(mesh: Mesh, center: Optional[torch.Tensor], scale: float, up_axis: str) -> Mesh:
    v = mesh.v_pos if center is None else (mesh.v_pos - center) * scale
    return Mesh(v_pos=to_up_axis(v, up_axis), t_pos_idx=mesh.t_pos_idx, v_tex=mesh.v_tex, t_tex_idx=mesh.t_tex_idx)


def export_mesh(
    mesh: Mesh,
    appearance_fn: Optional[AppearanceFn],
    out_dir: str | Path,
    cfg: ExportConfig | dict[str, Any] | None = None,
    empty_hint: str = "check the geometry's isosurface threshold",
) -> dict[str, Path]:
    """Clean, unwrap, bake and write ``mesh`` into ``out_dir``; returns ``{role: path}``.

    ``appearance_fn(points (N,3)) -> {"albedo": (N,3), "roughness"?: (N,1), "metallic"?: (N,1)}``
    gives the surface appearance in world coordinates; with ``None`` nothing is baked (grey
    material, no PLY colours). An empty mesh raises :class:`UserError` ending with
    ``empty_hint``: the caller says there which threshold it used and what to try instead.
    """
    cfg = parse_structured(ExportConfig, cfg, "export")
    _validate(cfg)
    if mesh.num_faces == 0:
        raise UserError(f"nothing to export: the mesh has 0 faces; {empty_hint}")
    mesh, _ = clean_mesh(
        mesh, cfg.min_component_faces, cfg.min_component_area_fraction, cfg.decimate_target, cfg.orient_normals
    )
    if mesh.num_faces == 0:
        raise UserError(
            f"nothing to export: cleanup left 0 faces (export.decimate_target={cfg.decimate_target}); "
            f"raise export.decimate_target or set it to 0; {empty_hint}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    textures = None
    if appearance_fn is not None and ("obj" in cfg.formats or "glb" in cfg.formats):
        mesh = uv_unwrap(mesh, cfg.texture_size, cfg.uv_padding)
        textures = bake_textures(
            mesh, appearance_fn, cfg.texture_size, cfg.dilate_px, rasterizer=Rasterizer(cfg.rasterizer)
        )
    center, scale = unit_cube_transform(mesh.v_pos) if cfg.scale_to_unit_cube else (None, 1.0)

    written: dict[str, Path] = {}
    if "obj" in cfg.formats:
        paths = write_obj(out_dir / f"{cfg.basename}.obj", _transformed(mesh, center, scale, cfg.up_axis), textures)
        for path in paths:
            role = path.suffix[1:] if path.suffix in (".obj", ".mtl") else path.stem[len(cfg.basename) + 1 :]
            written[role] = path
    if "glb" in cfg.formats:
        written["glb"] = write_glb(
            out_dir / f"{cfg.basename}.glb", _transformed(mesh, center, scale, cfg.glb_up_axis), textures
        )
    if "ply" in cfg.formats:
        colors = None
        if appearance_fn is not None:
            with torch.no_grad():
                colors = torch.cat(
                    [
                        appearance_fn(mesh.v_pos[i : i + 65536])["albedo"].reshape(-1, 3)
                        for i in range(0, mesh.num_vertices, 65536)
                    ]
                ).clamp(0, 1)
        written["ply"] = write_ply_mesh(
            out_dir / f"{cfg.basename}.ply", _transformed(mesh, center, scale, cfg.up_axis), colors
        )
    return written

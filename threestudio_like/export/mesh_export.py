"""The export entry point: cleanup → UV atlas → texture bake → OBJ/MTL/PNG, GLB, PLY.

``export_mesh(mesh, appearance_fn, out_dir, cfg, views=...)`` returns an :class:`ExportResult`:
the written paths by role (``obj``, ``mtl``, ``albedo``/``roughness``/``metallic`` PNGs beside
the OBJ, ``glb``, ``ply``) and what the cleanup and the bake found (:meth:`ExportResult.metrics`).
Textures are baked in world coordinates, before the output transforms (unit cube, up axis);
``views`` (the run's training cameras) let the bake fill the texels no view saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import torch

from ..core.config import NonNegativeInt, Probability, Range, parse_structured
from ..core.errors import UserError
from ..geometry.base import Mesh
from ..ops.rasterize import Rasterizer
from .axes import UpAxis, header_comments, to_up_axis, unit_cube_transform
from .bake import AppearanceFn, bake_textures
from .gltf import write_glb
from .mesh_ops import CleanupStats, clean_mesh
from .obj import write_obj
from .ply import write_ply_mesh
from .uv_atlas import uv_unwrap
from .visibility import Viewpoints, fill_from_seen, seen_points

FORMATS = ("obj", "glb", "ply")


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: ["obj", "glb"])
    """Files to write: ``obj`` (OBJ+MTL+PNG maps), ``glb`` (glTF binary), ``ply`` (vertex-coloured mesh)."""
    basename: str = "model"
    """File stem: ``<basename>.obj``, ``<basename>.glb``, ``<basename>_albedo.png`` ..."""
    texture_size: Annotated[int, Range(ge=8, le=16384)] = 1024
    """Side of the square texture maps in texels."""
    uv_padding: NonNegativeInt = 4
    """Texels xatlas leaves around each UV chart."""
    dilate_px: NonNegativeInt = 8
    """Rings of texels the baked colours are grown across chart seams."""
    min_component_faces: NonNegativeInt = 0
    """Remove connected components with fewer faces than this (the largest always stays)."""
    min_component_area_fraction: Probability = 0.01
    """Remove connected components with less than this fraction of the total surface area."""
    remove_enclosed: bool = True
    """Remove components enclosed by another, closed component (hidden inner shells)."""
    degenerate_tolerance: Annotated[float, Range(ge=0, lt=0.5)] = 0.01
    """Faces with an altitude below this fraction of the median edge length are degenerate
    (zero-area or sliver): collapsed or flipped away."""
    decimate_target: NonNegativeInt = 0
    """Reduce to at most this many faces (vertex clustering); 0 keeps all faces."""
    orient_normals: bool = True
    """Make the winding consistent and the faces point outward (signed volume > 0)."""
    scale_to_unit_cube: bool = False
    """Centre the bounding box at the origin and scale its longest side to 1."""
    up_axis: UpAxis = "+Y"
    """Up axis of OBJ and PLY files: ``+Y`` (what Blender and most tools assume) or ``+Z`` (our
    world frame, unchanged); written in the file's header comment."""
    glb_up_axis: UpAxis = "+Y"
    """Up axis of the GLB: ``+Y`` as glTF specifies (rotated from our +Z-up world), or ``+Z``."""
    rasterizer: Literal["auto", "torch", "nvdiffrast"] = "auto"
    """Rasterizer for UV baking and visibility (ops/rasterize.py)."""
    fill_unseen: bool = True
    """Texels no training view saw take the colour of the nearest seen surface (when the run's
    cameras are known: a run's export passes them)."""


@dataclass
class ExportResult:
    """What :func:`export_mesh` wrote and found."""

    files: dict[str, Path]
    """Written paths by role: obj, mtl, albedo, roughness, metallic, glb, ply."""
    cleanup: CleanupStats
    """What the mesh cleanup did."""
    unseen_texel_fraction: Optional[float] = None
    """Fraction of the covered texels no training view saw (filled); None without views."""

    def metrics(self) -> dict[str, float]:
        """Scalars for ``metrics.jsonl``."""
        c = self.cleanup
        out: dict[str, float] = {
            "components": c.components_out,
            "faces": c.faces_out,
            "vertices": c.vertices_out,
            "degenerate_faces_fixed": c.degenerate_faces,
            "enclosed_components_removed": c.components_enclosed,
            "floaters_removed": c.components_removed,
        }
        if self.unseen_texel_fraction is not None:
            out["unseen_texel_fraction"] = self.unseen_texel_fraction
        return out


def export_config(cfg: ExportConfig | dict[str, Any] | None) -> ExportConfig:
    """``export:`` (without ``enabled``) as a checked :class:`ExportConfig`."""
    cfg = parse_structured(ExportConfig, cfg, "export")
    _check(cfg)
    return cfg


def _check(cfg: ExportConfig) -> None:
    unknown = [f for f in cfg.formats if f not in FORMATS]
    if unknown or not cfg.formats:
        raise UserError(f"export.formats must be a non-empty list of {'|'.join(FORMATS)}, got {list(cfg.formats)}")
    if 0 < cfg.decimate_target < 4:
        raise UserError(f"export.decimate_target must be 0 (off) or at least 4 faces, got {cfg.decimate_target}")


def _transformed(mesh: Mesh, center: Optional[torch.Tensor], scale: float, up_axis: str) -> Mesh:
    v = mesh.v_pos if center is None else (mesh.v_pos - center) * scale
    return Mesh(v_pos=to_up_axis(v, up_axis), t_pos_idx=mesh.t_pos_idx, v_tex=mesh.v_tex, t_tex_idx=mesh.t_tex_idx)


def export_mesh(
    mesh: Mesh,
    appearance_fn: Optional[AppearanceFn],
    out_dir: str | Path,
    cfg: ExportConfig | dict[str, Any] | None = None,
    empty_hint: str = "check the geometry's isosurface threshold",
    views: Optional[Viewpoints] = None,
) -> ExportResult:
    """Clean, unwrap, bake and write ``mesh`` into ``out_dir``.

    ``appearance_fn(points (N,3)) -> {"albedo": (N,3), "roughness"?: (N,1), "metallic"?: (N,1)}``
    gives the surface appearance in world coordinates; with ``None`` nothing is baked (grey
    material, no PLY colours). ``views`` are the cameras that trained the model (with
    ``fill_unseen``, texels none of them saw are filled from seen ones). An empty mesh raises
    :class:`UserError` ending with ``empty_hint``: the caller says there which threshold it used
    and what to try instead.
    """
    cfg = export_config(cfg)
    if mesh.num_faces == 0:
        raise UserError(f"nothing to export: the mesh has 0 faces; {empty_hint}")
    mesh, stats = clean_mesh(
        mesh,
        cfg.min_component_faces,
        cfg.min_component_area_fraction,
        cfg.decimate_target,
        cfg.orient_normals,
        cfg.remove_enclosed,
        cfg.degenerate_tolerance,
    )
    if mesh.num_faces == 0:
        raise UserError(
            f"nothing to export: cleanup left 0 faces (export.decimate_target={cfg.decimate_target}); "
            f"raise export.decimate_target or set it to 0; {empty_hint}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    textures, unseen = None, None
    if appearance_fn is not None and ("obj" in cfg.formats or "glb" in cfg.formats):
        mesh = uv_unwrap(mesh, cfg.texture_size, cfg.uv_padding)
        textures = bake_textures(
            mesh,
            appearance_fn,
            cfg.texture_size,
            cfg.dilate_px,
            rasterizer=Rasterizer(cfg.rasterizer),
            views=views if cfg.fill_unseen else None,
        )
        if textures.seen is not None:
            unseen = 1.0 - float(textures.seen.sum()) / max(int(textures.coverage.sum()), 1)
    center, scale = unit_cube_transform(mesh.v_pos) if cfg.scale_to_unit_cube else (None, 1.0)
    comments = header_comments(cfg.up_axis, cfg.scale_to_unit_cube)

    written: dict[str, Path] = {}
    if "obj" in cfg.formats:
        paths = write_obj(
            out_dir / f"{cfg.basename}.obj",
            _transformed(mesh, center, scale, cfg.up_axis),
            textures,
            comments=comments,
        )
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
            if views is not None and cfg.fill_unseen:
                rasterizer = Rasterizer(cfg.rasterizer)
                seen = seen_points(mesh, mesh.v_pos, mesh.vertex_normals(), views, rasterizer)
                colors = fill_from_seen(colors, mesh.v_pos, seen)
        written["ply"] = write_ply_mesh(
            out_dir / f"{cfg.basename}.ply", _transformed(mesh, center, scale, cfg.up_axis), colors, comments
        )
    return ExportResult(files=written, cleanup=stats, unseen_texel_fraction=unseen)

"""Wavefront OBJ + MTL + texture PNGs.

``<stem>.obj`` (header comments — up axis, units —, positions, UVs ``vt`` with ``v`` up,
area-weighted vertex normals, 1-based ``f v/vt/vn``), ``<stem>.mtl`` with one material:
``map_Kd`` albedo and, when baked, the PBR extension maps ``map_Pr`` (roughness) and ``map_Pm``
(metallic), each a PNG beside the OBJ.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..core.atomic import atomic_write, atomic_write_text
from ..geometry.base import Mesh
from .bake import BakedTextures
from .image_io import write_png


def _rows(prefix: str, values: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if len(values):
        np.savetxt(buf, values, fmt=f"{prefix} {fmt}")
    return buf.getvalue()


def write_obj(
    path: str | Path,
    mesh: Mesh,
    textures: Optional[BakedTextures] = None,
    material_name: str = "material_0",
    comments: Sequence[str] = (),
) -> list[Path]:
    """Write ``path`` (``.obj``), its ``.mtl`` and texture PNGs; returns the written paths.

    ``mesh`` needs ``v_tex``/``t_tex_idx`` when ``textures`` is given; ``comments`` become
    ``# `` lines of the header.
    """
    path = Path(path)
    stem = path.stem
    written: list[Path] = []
    maps: dict[str, str] = {}
    if textures is not None:
        if mesh.v_tex is None or mesh.t_tex_idx is None:
            raise ValueError("write_obj: textures given but the mesh has no UV atlas")
        for key, name, image in (
            ("map_Kd", "albedo", textures.albedo),
            ("map_Pr", "roughness", textures.roughness),
            ("map_Pm", "metallic", textures.metallic),
        ):
            if image is None:
                continue
            written.append(write_png(path.parent / f"{stem}_{name}.png", image))
            maps[key] = written[-1].name

    mtl = [
        f"newmtl {material_name}",
        "Ka 1.000000 1.000000 1.000000",
        "Kd 1.000000 1.000000 1.000000",
        "Ks 0.000000 0.000000 0.000000",
        "Ns 1.000000",
        "d 1.000000",
        "illum 1",
    ]
    mtl += [f"{key} {name}" for key, name in maps.items()]
    written.append(atomic_write_text(path.with_suffix(".mtl"), "\n".join(mtl) + "\n"))

    v = mesh.v_pos.detach().cpu().double().numpy()
    vn = mesh.vertex_normals().detach().cpu().double().numpy()
    f = mesh.t_pos_idx.detach().cpu().numpy().astype(np.int64) + 1
    header = "".join(f"# {line}\n" for line in ["threestudio_like", *comments])
    header = f"{header}mtllib {path.with_suffix('.mtl').name}\n".encode()
    body = [header, _rows("v", v, "%.7g %.7g %.7g"), _rows("vn", vn, "%.6f %.6f %.6f")]
    if textures is not None:
        vt = mesh.v_tex.detach().cpu().double().numpy()
        ft = mesh.t_tex_idx.detach().cpu().numpy().astype(np.int64) + 1
        body.append(_rows("vt", vt, "%.7f %.7f"))
        corners = np.stack([f, ft, f], axis=2).reshape(-1, 9)
        face_fmt = "%d/%d/%d %d/%d/%d %d/%d/%d"
    else:
        corners = np.stack([f, f], axis=2).reshape(-1, 6)
        face_fmt = "%d//%d %d//%d %d//%d"
    body.append(f"usemtl {material_name}\n".encode())
    body.append(_rows("f", corners, face_fmt))
    written.append(atomic_write(path, lambda fh: [fh.write(chunk) for chunk in body]))
    return written

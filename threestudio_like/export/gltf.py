"""glTF 2.0 binary (GLB) writer: one mesh, one PBR material, textures embedded as PNG.

Layout (glTF 2.0 spec, "GLB File Format Specification"): 12-byte header (magic ``glTF``,
version 2, total length), a JSON chunk padded with spaces to 4 bytes, a BIN chunk padded with
zeros. The BIN chunk holds, each 4-byte aligned: POSITION (float32 VEC3, with min/max), NORMAL
(unit float32 VEC3), TEXCOORD_0 (float32 VEC2, ``v`` flipped: glTF's origin is the image's
top-left), indices (uint32), then the PNG images.

Material: ``pbrMetallicRoughness`` with ``baseColorTexture`` (albedo) and, when a roughness or
metallic map was baked, ``metallicRoughnessTexture`` (G = roughness, B = metallic, as the spec
reads them; a missing one is filled with the factor's neutral value). Without those maps the
material is dielectric and fully rough (metallicFactor 0, roughnessFactor 1) — glTF's defaults
(metallic 1) would render a diffuse bake as dark metal.

Positions are written as given; :func:`~threestudio_like.export.axes.to_up_axis` converts our
+Z-up world to glTF's +Y up before calling this.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..core.atomic import atomic_write
from ..geometry.base import Mesh
from .bake import BakedTextures
from .image_io import png_bytes

_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


def _pad4(data: bytes, fill: bytes = b"\x00") -> bytes:
    return data + fill * (-len(data) % 4)


def split_uv_seams(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Per-vertex arrays for a format with one index per corner.

    Returns ``(positions (N,3), normals (N,3), uvs (N,2) or None, faces (F,3))``: a vertex for
    every distinct (position, UV) pair; normals are the mesh's area-weighted vertex normals.
    """
    v = mesh.v_pos.detach().cpu().double().numpy()
    vn = mesh.vertex_normals().detach().cpu().double().numpy()
    bad = ~np.isfinite(vn).all(1) | (np.linalg.norm(vn, axis=1) < 0.5)
    vn[bad] = (0.0, 0.0, 1.0)  # vertices of zero-area fans only
    f = mesh.t_pos_idx.detach().cpu().numpy().astype(np.int64)
    if mesh.v_tex is None or mesh.t_tex_idx is None:
        return v, vn, None, f
    ft = mesh.t_tex_idx.detach().cpu().numpy().astype(np.int64)
    pairs = np.stack([f.reshape(-1), ft.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    uv = mesh.v_tex.detach().cpu().double().numpy()[unique[:, 1]]
    return v[unique[:, 0]], vn[unique[:, 0]], uv, inverse.reshape(-1, 3)


def _metallic_roughness_image(textures: BakedTextures) -> Optional[np.ndarray]:
    """(S,S,3) float: R unused (1), G roughness, B metallic; None when neither was baked."""
    if textures.roughness is None and textures.metallic is None:
        return None
    size = textures.albedo.shape[:2]
    ones = torch.ones(*size, 1, dtype=textures.albedo.dtype, device=textures.albedo.device)
    rough = textures.roughness if textures.roughness is not None else ones
    metal = textures.metallic if textures.metallic is not None else torch.zeros_like(ones)
    return torch.cat([ones, rough, metal], dim=-1).cpu().numpy()


def glb_bytes(
    mesh: Mesh, textures: Optional[BakedTextures] = None, base_color: tuple[float, float, float] = (0.8, 0.8, 0.8)
) -> bytes:
    """The GLB file for ``mesh`` (+ its baked ``textures``; ``base_color`` when there are none)."""
    if textures is not None and (mesh.v_tex is None or mesh.t_tex_idx is None):
        raise ValueError("glb_bytes: textures given but the mesh has no UV atlas")
    pos, nrm, uv, faces = split_uv_seams(
        mesh if textures is not None else Mesh(v_pos=mesh.v_pos, t_pos_idx=mesh.t_pos_idx)
    )
    pos, nrm = pos.astype(np.float32), nrm.astype(np.float32)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)

    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def add_view(data: bytes, target: Optional[int] = None) -> int:
        blob.extend(b"\x00" * (-len(blob) % 4))
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        blob.extend(data)
        views.append(view)
        return len(views) - 1

    def add_accessor(array: np.ndarray, kind: str, component: int, target: int, bounds: bool = False) -> int:
        acc = {
            "bufferView": add_view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if bounds:
            acc["min"] = array.min(0).astype(float).tolist()
            acc["max"] = array.max(0).astype(float).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    attributes = {
        "POSITION": add_accessor(pos, "VEC3", _FLOAT, _ARRAY_BUFFER, bounds=True),
        "NORMAL": add_accessor(nrm, "VEC3", _FLOAT, _ARRAY_BUFFER),
    }
    if uv is not None:
        uv_gl = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)
        attributes["TEXCOORD_0"] = add_accessor(uv_gl, "VEC2", _FLOAT, _ARRAY_BUFFER)
    indices = add_accessor(faces.reshape(-1).astype(np.uint32), "SCALAR", _UINT, _ELEMENT_ARRAY_BUFFER)

    pbr: dict = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    images: list[dict] = []
    if textures is not None:
        images.append({"bufferView": add_view(png_bytes(textures.albedo)), "mimeType": "image/png"})
        pbr["baseColorTexture"] = {"index": 0}
        mr = _metallic_roughness_image(textures)
        if mr is not None:
            images.append({"bufferView": add_view(png_bytes(mr)), "mimeType": "image/png"})
            pbr["metallicRoughnessTexture"] = {"index": 1}
            pbr["metallicFactor"] = 1.0
    else:
        pbr["baseColorFactor"] = [float(c) for c in base_color] + [1.0]

    doc: dict = {
        "asset": {"version": "2.0", "generator": "threestudio_like"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "model"}],
        "meshes": [
            {"name": "model", "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}
        ],
        "materials": [{"name": "material_0", "pbrMetallicRoughness": pbr}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(_pad4(bytes(blob)))}],
    }
    if images:
        doc["samplers"] = [
            {"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}
        ]
        doc["images"] = images
        doc["textures"] = [{"sampler": 0, "source": i} for i in range(len(images))]

    json_chunk = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    bin_chunk = _pad4(bytes(blob))
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(json_chunk), b"JSON"),
            json_chunk,
            struct.pack("<I4s", len(bin_chunk), b"BIN\x00"),
            bin_chunk,
        ]
    )


def write_glb(path: str | Path, mesh: Mesh, textures: Optional[BakedTextures] = None) -> Path:
    """Write :func:`glb_bytes` to ``path`` atomically."""
    data = glb_bytes(mesh, textures)
    return atomic_write(path, lambda f: f.write(data))

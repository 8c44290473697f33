"""Time of each export step on CPU for icosphere meshes; prints one JSON object.

Meshes: icosphere(4) (5,120 faces) and icosphere(5) (20,480 faces) with small bumps.
Steps: ``clean_mesh`` (weld, floaters, orient), ``uv_unwrap`` (xatlas), ``bake_textures``
(torch UV rasterization + appearance query + seam dilation) at several texture sizes,
``glb_bytes`` (PNG encoding dominates) and the whole ``export_mesh`` (obj + glb). The appearance
function is position → colour, so the figures are the export's own cost, not a network's.

Usage: ``python benchmarks/bench_export.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
import trimesh

from threestudio_like.export.bake import bake_textures
from threestudio_like.export.gltf import glb_bytes
from threestudio_like.export.mesh_export import export_mesh
from threestudio_like.export.mesh_ops import clean_mesh
from threestudio_like.export.uv_atlas import uv_unwrap
from threestudio_like.geometry.base import Mesh
from threestudio_like.ops.rasterize import Rasterizer


def position_color(p: torch.Tensor) -> dict:
    return {"albedo": (p + 1) / 2}


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(subdivisions: int, sizes: list[int]) -> dict:
    tm = trimesh.creation.icosphere(subdivisions)
    # small deterministic bumps: xatlas 0.0.11 segfaults on the perfectly regular icosphere(6)
    bumps = 1 + 0.01 * np.sin(7 * tm.vertices[:, :1]) * np.cos(5 * tm.vertices[:, 1:2])
    mesh = Mesh(torch.tensor(tm.vertices * bumps, dtype=torch.float32), torch.tensor(tm.faces))
    row: dict = {"faces": mesh.num_faces}
    row["clean_s"], (cleaned, _) = seconds(lambda: clean_mesh(mesh, min_component_area_fraction=0.01))
    row["uv_unwrap_s"], uv = seconds(lambda: uv_unwrap(cleaned, max(sizes)))
    raster = Rasterizer("torch")
    for size in sizes:
        row[f"bake_{size}_s"], baked = seconds(
            lambda size=size: bake_textures(uv, position_color, size, rasterizer=raster)
        )
    row[f"glb_bytes_{max(sizes)}_s"], _ = seconds(lambda: glb_bytes(uv, baked))
    with tempfile.TemporaryDirectory() as tmp:
        row[f"export_mesh_obj_glb_{max(sizes)}_s"], _ = seconds(
            lambda: export_mesh(mesh, position_color, tmp, {"texture_size": max(sizes), "rasterizer": "torch"})
        )
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one small mesh, 256² textures")
    args = parser.parse_args()
    cases = [(3, [256])] if args.quick else [(4, [512, 1024]), (5, [1024, 2048])]
    result = {
        "benchmark": "export",
        "torch_threads": torch.get_num_threads(),
        "loadavg_1min": os.getloadavg()[0],
        "cases": [run(s, sizes) for s, sizes in cases],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

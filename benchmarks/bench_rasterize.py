"""Throughput of the pure-torch rasterizer twin on CPU; prints one JSON object.

Workload (as in /work/shared/notes/raster-cpu.md): icosphere at distance 3, fovy 45°,
``rasterize`` + ``interpolate`` of a 3-channel attribute; fwd+bwd adds the backward of the
attribute sum to vertex positions and attributes. ``antialias`` (of the interpolated image) is
timed separately. Figures: median milliseconds and Mpix/s (pixels of the image per second).

Usage: ``python benchmarks/bench_rasterize.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import trimesh

from threestudio_like.data.cameras import make_cameras
from threestudio_like.ops.rasterize import Rasterizer

CASES = [(3, 64), (3, 512), (4, 256), (5, 256), (6, 512)]  # (icosphere subdivisions, resolution)
QUICK_CASES = [(3, 64), (4, 256)]


def icosphere_clip(subdivisions: int, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.int32)
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    cam = make_cameras(one(20), one(30), one(3), one(45), res, res)
    v_hom = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=1)
    return (v_hom @ cam.mvp[0].T)[None].contiguous(), faces


def time_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall milliseconds; min is the figure least disturbed by other processes."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def run_case(r: Rasterizer, subdivisions: int, res: int, repeats: int) -> dict:
    pos, tri = icosphere_clip(subdivisions, res)
    attr = torch.rand(1, pos.shape[1], 3)
    pixels = res * res

    def forward():
        with torch.no_grad():
            rast, _ = r.rasterize(pos, tri, (res, res))
            r.interpolate(attr, rast, tri)

    def forward_backward():
        p = pos.clone().requires_grad_(True)
        a = attr.clone().requires_grad_(True)
        rast, _ = r.rasterize(p, tri, (res, res))
        out, _ = r.interpolate(a, rast, tri)
        out.sum().backward()

    with torch.no_grad():
        rast, _ = r.rasterize(pos, tri, (res, res))
        color, _ = r.interpolate(attr, rast, tri)

    def aa_forward_backward():
        p = pos.clone().requires_grad_(True)
        c = color.clone().requires_grad_(True)
        r.antialias(c, rast, p, tri).sum().backward()

    def aa_forward():
        with torch.no_grad():
            r.antialias(color, rast, pos, tri)

    row = {
        "faces": int(tri.shape[0]),
        "res": res,
        "covered_fraction": round(float((rast[..., 3] > 0).float().mean()), 3),
    }
    for name, fn in (
        ("fwd", forward),
        ("fwd_bwd", forward_backward),
        ("antialias_fwd", aa_forward),
        ("antialias_fwd_bwd", aa_forward_backward),
    ):
        median, best = time_ms(fn, repeats)
        row[f"{name}_ms"] = round(median, 2)
        row[f"{name}_min_ms"] = round(best, 2)
        if not name.startswith("antialias"):
            row[f"{name}_mpix_s"] = round(pixels / median / 1e3, 2)
            row[f"{name}_mpix_s_at_min"] = round(pixels / best / 1e3, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small cases only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = Rasterizer("torch")
    load_before = os.getloadavg()[0]
    rows = [run_case(r, s, res, args.repeats) for s, res in (QUICK_CASES if args.quick else CASES)]
    print(
        json.dumps(
            {
                "benchmark": "rasterize_torch_cpu",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
                "repeats": args.repeats,
                "cases": rows,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Throughput of Gaussian splatting on CPU, twin vs a dense reference; prints one JSON object.

The pure-torch twin (``ops/splat_torch.py``) against a straightforward dense implementation, and
gsplat's pure-torch projection where gsplat imports.

Scene: N Gaussians uniform in a ball of radius 0.5 with random rotations, scales 0.6·(ball
volume / N)^(1/3) (about a nearest-neighbour spacing, as 3DGS initialises them) times
exp(N(0, 0.25)), opacities sigmoid(N(0,1)), RGB colours; one camera at distance 2.5 with fovy
49.1° (DreamGaussian's). Forward = colour + alpha + depth; forward + backward adds the gradient of
a fixed random weighting of colour and alpha with respect to every Gaussian parameter.

The dense reference evaluates every Gaussian at every pixel (blocks of 2^22 / N pixels at a time,
so memory stays bounded; backward per block, the loss being a sum over pixels), sorts by depth once
and blends with a cumulative product — the code idea of ``tests/test_splat.py``'s reference. Its
cost is Gaussians × pixels, so it runs only up to ``--dense-max-pairs`` (default: 50k × 256²);
larger cases are listed under ``trimmed``.

gsplat's pure-torch ``_rasterize_to_pixels`` calls gsplat's CUDA kernel
``rasterize_to_indices_in_range`` (and nerfacc), so on CPU only its ``_fully_fused_projection``
runs; it is timed against the twin's projection.

Usage: ``python benchmarks/bench_splat.py [--quick] [--repeats N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from functools import partial

import torch

from threestudio_like.ops.splat import rasterize_gaussians
from threestudio_like.ops.splat_gsplat import gsplat_available
from threestudio_like.ops.splat_torch import project_gaussians

CASES = [(10_000, 256), (50_000, 256), (200_000, 256), (10_000, 512), (50_000, 512), (200_000, 512)]
QUICK_CASES = [(10_000, 128), (50_000, 256)]
TARGET = (50_000, 256)


def scene(n: int, res: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = d * torch.rand(n, 1, generator=g) ** (1 / 3) * 0.5
    spacing = (4 / 3 * math.pi * 0.5**3 / n) ** (1 / 3)
    scales = 0.6 * spacing * torch.exp(0.5 * torch.randn(n, 3, generator=g))
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    opacities = torch.sigmoid(torch.randn(n, generator=g))
    colors = torch.rand(n, 3, generator=g)
    viewmat = torch.eye(4)
    viewmat[2, 3] = 2.5  # camera at distance 2.5 on −z, looking at the origin (OpenCV: z forward)
    f = 0.5 * res / math.tan(math.radians(49.1) / 2)
    ks = torch.tensor([[f, 0.0, res / 2], [0.0, f, res / 2], [0.0, 0.0, 1.0]])
    weights = torch.randn(1, res, res, 4, generator=g)
    return dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmat[None],
        Ks=ks[None],
        res=res,
        weights=weights,
    )


PARAMS = ("means", "quats", "scales", "opacities", "colors")


def leaves(s: dict, backward: bool) -> list[torch.Tensor]:
    """Fresh copies of the Gaussian parameters (requiring grad for a backward)."""
    return [s[k].clone().requires_grad_(backward) for k in PARAMS]


def twin(s: dict, params: list[torch.Tensor]) -> None:
    backward = params[0].requires_grad
    out = rasterize_gaussians(*params, s["viewmats"], s["Ks"], s["res"], s["res"], implementation="torch")
    if backward:
        w = s["weights"]
        ((out.colors * w[..., :3]).sum() + (out.alpha * w[..., 3:]).sum()).backward()


def dense(s: dict, params: list[torch.Tensor], block_pairs: int = 1 << 22) -> None:
    """Every Gaussian × every pixel, sorted by depth, cumulative-product transmittance; pixels in
    blocks of ``block_pairs / N`` (each block's backward right after its forward)."""
    res, backward = s["res"], params[0].requires_grad
    means, quats, scales, opacities, colors = params
    proj = project_gaussians(means, quats, scales, opacities, s["viewmats"], s["Ks"], res, res)
    order = torch.argsort(proj.depths[0].detach())
    # projected parameters in depth order, as leaves that each block's backward fills
    flat = [proj.means2d[0, order], proj.conics[0, order], opacities[order], colors[order]]
    parts = [t.detach().requires_grad_(backward) for t in flat]
    m2, con, op, col = parts
    pix = torch.arange(res * res)
    px_all, py_all = (pix % res).float() + 0.5, torch.div(pix, res, rounding_mode="floor").float() + 0.5
    weights = s["weights"].reshape(-1, 4)
    step = max(1, block_pairs // means.shape[0])
    for p0 in range(0, res * res, step):
        with torch.set_grad_enabled(backward):
            px, py = px_all[p0 : p0 + step, None], py_all[p0 : p0 + step, None]
            dx, dy = px - m2[:, 0], py - m2[:, 1]  # (P,N)
            sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
            alpha = (op * torch.exp(-sigma)).clamp(max=0.99)
            alpha = alpha * (alpha >= 1 / 255)
            t_after = torch.cumprod(1 - alpha, dim=1)
            weight = alpha * t_after / (1 - alpha) * (t_after > 1e-4)
            rgb, acc = weight @ col, weight.sum(1, keepdim=True)
            if backward:
                w = weights[p0 : p0 + step]
                ((rgb * w[:, :3]).sum() + (acc * w[:, 3:]).sum()).backward()
    if backward:
        torch.autograd.backward(flat, [t.grad for t in parts])


def gsplat_projection(s: dict) -> None:
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    _fully_fused_projection(s["means"], covars, s["viewmats"], s["Ks"], s["res"], s["res"])


def twin_projection(s: dict) -> None:
    project_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], s["res"], s["res"])


def run(fn, s: dict, backward: bool) -> None:
    fn(s, leaves(s, backward))


def time_s(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall seconds after one warm-up call (none when repeats is 1)."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def rates(n: int, res: int, seconds: float) -> dict:
    return {"gaussians_per_s": round(n / seconds), "mpix_per_s": round(res * res / seconds / 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small cases only")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the twin (the dense one runs once)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--dense-max-pairs", type=float, default=50_000 * 256 * 256, help="skip the dense reference above this N·pixels"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    has_gsplat = gsplat_available()
    load_before = os.getloadavg()[0]
    rows, trimmed = [], []
    for n, res in QUICK_CASES if args.quick else CASES:
        s = scene(n, res)
        row = {"gaussians": n, "res": res}
        for name, fn, repeats in (
            ("twin", twin, args.repeats),
            ("dense", dense, 1),
        ):
            if name == "dense" and n * res * res > args.dense_max_pairs:
                trimmed.append(f"dense at {n} Gaussians, {res}²: {n * res * res:.2g} pairs > --dense-max-pairs")
                continue
            for mode, backward in (("fwd", False), ("fwd_bwd", True)):
                median, best = time_s(partial(run, fn, s, backward), repeats)
                row[f"{name}_{mode}_s"] = round(median, 3)
                row[f"{name}_{mode}_min_s"] = round(best, 3)
                row[f"{name}_{mode}"] = rates(n, res, median)
        if "dense_fwd_s" in row:
            row["speedup_fwd"] = round(row["dense_fwd_s"] / row["twin_fwd_s"], 1)
            row["speedup_fwd_bwd"] = round(row["dense_fwd_bwd_s"] / row["twin_fwd_bwd_s"], 1)
        with torch.no_grad():
            row["twin_projection_s"] = round(time_s(partial(twin_projection, s), args.repeats)[0], 4)
            if has_gsplat:
                row["gsplat_torch_projection_s"] = round(time_s(partial(gsplat_projection, s), args.repeats)[0], 4)
        rows.append(row)
    target = next((r for r in rows if (r["gaussians"], r["res"]) == TARGET and "speedup_fwd" in r), None)
    print(
        json.dumps(
            {
                "benchmark": "splat_torch_cpu",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
                "repeats": {"twin": args.repeats, "dense": 1},
                "gsplat": (
                    "imports: its pure-torch _fully_fused_projection is timed; its _rasterize_to_pixels needs "
                    "gsplat's CUDA kernel rasterize_to_indices_in_range (and nerfacc), not runnable on CPU"
                    if has_gsplat
                    else "not installed (pip install -e .[cuda])"
                ),
                "cases": rows,
                "trimmed": trimmed,
                "target_twin_vs_dense_at_50k_256": (
                    {"fwd": target["speedup_fwd"], "fwd_bwd": target["speedup_fwd_bwd"], "required": 3.0}
                    if target
                    else None
                ),
            }
        )
    )


if __name__ == "__main__":
    main()

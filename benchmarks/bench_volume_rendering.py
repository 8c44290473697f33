"""Volume rendering throughput with and without the occupancy grid; prints one JSON object.

Workload: a mostly empty scene — a ball of radius 0.15 (density 50, soft 0.01 edge) in the box
[-1, 1]^3, colour from a 3→64→64→3 MLP of the position (the per-sample cost of a small field),
seen by 2 orbit views at distance 1.8, fovy 40°, ``--res``² pixels each. Both estimators march
with the same step (``num_samples_per_ray`` over the box diagonal), so they reach the same image
error up to what the grid's threshold drops; errors are PSNR against a uniform render with 4× the
samples. The grid gets ``--grid-updates`` updates first (what ~1000 training steps give).
Uniform marching is also run with 1/8, 1/4, 1/2 of the steps, and the cheapest one at least as
accurate as the grid is the "equal error" baseline. Timed: eval forward (no grad; the grid path
includes its early-stop density pass) and a training forward+backward (rays/s, median).

Usage: ``python benchmarks/bench_volume_rendering.py [--res 64] [--samples 128] [--repeats 3]
[--threads N] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from types import SimpleNamespace

import torch
from torch import nn

from threestudio_like.background.base import SolidBackground
from threestudio_like.data.cameras import orbit_cameras
from threestudio_like.geometry.base import GeometryOutput
from threestudio_like.materials.base import NoMaterial
from threestudio_like.renderers.volume import VolumeRenderer


class SmallBallField(nn.Module):
    """Soft ball density + MLP colour features; scene box [-1, 1]^3."""

    def __init__(self, ball_radius: float = 0.15, sigma: float = 50.0) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(radius=1.0)
        self.ball_radius, self.sigma = ball_radius, sigma
        self.mlp = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward_density(self, points: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.sigmoid((self.ball_radius - points.norm(dim=-1, keepdim=True)) / 0.01)

    def forward(self, points: torch.Tensor, output_normal: bool = False) -> GeometryOutput:
        return GeometryOutput(features=self.mlp(points), density=self.forward_density(points))


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grid-updates", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    field = SmallBallField().to(device)
    material, background = NoMaterial(), SolidBackground({"color": (1.0, 1.0, 1.0)})
    cams = orbit_cameras(2, 15.0, 1.8, 40.0, args.res, args.res, device=device)
    n_rays = 2 * args.res * args.res

    def renderer(estimator: str, samples: int) -> VolumeRenderer:
        return VolumeRenderer(
            {"estimator": estimator, "num_samples_per_ray": samples, "implementation": "auto", "eval_chunk_size": 0}
        ).to(device)

    with torch.no_grad():
        reference = renderer("uniform", 4 * args.samples).eval()(cams, field, material, background, "albedo").rgb

    result = {
        "workload": f"ball r=0.15 in box r=1, 2 views {args.res}x{args.res}, "
        f"MLP 3-64-64-3 colour; reference: uniform, {4 * args.samples} steps",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
        "n_rays": n_rays,
    }

    def measure(r: VolumeRenderer) -> dict:
        def forward_eval():
            with torch.no_grad():
                return r.eval()(cams, field, material, background, "albedo")

        def forward_backward():
            out = r.train()(cams, field, material, background, "albedo")
            out.rgb.sum().backward()
            return out

        out = forward_eval()
        t_eval = median_s(forward_eval, args.repeats)
        r.cfg.randomized = False  # same samples as eval, so the step counts compare
        train_out = forward_backward()
        t_train = median_s(forward_backward, args.repeats)
        return {
            "samples_per_diagonal": r.cfg.num_samples_per_ray,
            "eval_rays_per_s": round(n_rays / t_eval),
            "train_fwd_bwd_rays_per_s": round(n_rays / t_train),
            "samples_per_ray_eval": round(out.extras["num_samples"] / n_rays, 3),
            "samples_per_ray_train": round(train_out.extras["num_samples"] / n_rays, 3),
            "psnr_vs_reference_db": round(psnr(out.rgb, reference), 2),
        }

    grid_r = renderer("occgrid", args.samples)
    g = torch.Generator(device).manual_seed(0)
    for step in range(args.grid_updates):
        grid_r.update_occupancy_grid(field, step, generator=g)
    grid_r.update_step(0, args.grid_updates - 1)  # no further update while timing
    result["occupied_cell_fraction"] = round(grid_r.occupancy_grid.occupied_fraction(), 5)
    grid = result["occgrid"] = measure(grid_r)
    result["uniform"] = [
        measure(renderer("uniform", n)) for n in (args.samples // 8, args.samples // 4, args.samples // 2, args.samples)
    ]
    same_step = result["uniform"][-1]
    # cheapest uniform setting at least as accurate as the grid
    equal = next((u for u in result["uniform"] if u["psnr_vs_reference_db"] >= grid["psnr_vs_reference_db"]), same_step)
    result["uniform_at_equal_error"] = equal["samples_per_diagonal"]
    result["speedup_eval_at_equal_error"] = round(grid["eval_rays_per_s"] / equal["eval_rays_per_s"], 2)
    result["speedup_train_at_equal_error"] = round(
        grid["train_fwd_bwd_rays_per_s"] / equal["train_fwd_bwd_rays_per_s"], 2
    )
    result["speedup_eval_same_step"] = round(grid["eval_rays_per_s"] / same_step["eval_rays_per_s"], 2)
    result["sample_reduction_same_step"] = round(
        same_step["samples_per_ray_eval"] / max(grid["samples_per_ray_eval"], 1e-9), 1
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

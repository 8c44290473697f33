"""Which shape does the toy SD prior prefer for each toy prompt? Prints JSON.

For each prompt ("a red cube", …), :func:`shape_energy.shape_energies` (``benchmarks/shape_energy.py``)
of the six true toy shapes (all in the prompted colour), the true cube turned 45°, two rounded
boxes, and any ``--meshes`` (OBJ/GLB/PLY files, e.g. a run's ``export/model.obj``): the prior's guided
denoising error on their renders (CFG 5, x̂₀ clamp 1.0, as the default experiment distils), lower =
preferred. ``rank`` of the prompted shape among the six true shapes (0 = preferred).

Usage: ``python benchmarks/bench_toy_energy.py [--prompts "a red cube" ...] [--meshes run/export/model.obj ...]
[--views 48] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from shape_energy import shape_energies

from threestudio_like.export.axes import UP_AXES, from_up_axis
from threestudio_like.geometry.base import Mesh
from threestudio_like.geometry.explicit_mesh import load_mesh_file
from threestudio_like.guidance.pretrained import load_diffusion_prior, load_text_encoder
from threestudio_like.toyworld.priors import ASSETS
from threestudio_like.toyworld.shapes import SHAPES, ToyShape, box_sdf, parse_prompt, turn_about_z


def rounded_box(half: float, radius: float) -> Mesh:
    return ToyShape("rounded_box", lambda p: box_sdf(p, half, radius)).mesh()


def load_mesh(path: str, up_axis: str) -> Mesh:
    """A mesh file written with ``up_axis`` up (our exports: +Y) in the toy world's +Z-up frame."""
    vertices, faces = load_mesh_file(path, where="--meshes")
    return Mesh(from_up_axis(torch.tensor(vertices, dtype=torch.float32), up_axis), torch.tensor(faces))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", nargs="*", default=[f"a red {s}" for s in SHAPES if s != "mug"])
    parser.add_argument("--meshes", nargs="*", default=[])
    parser.add_argument("--meshes-up-axis", choices=UP_AXES, default="+Y", help="up axis of the --meshes files")
    parser.add_argument("--views", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_diffusion_prior(str(ASSETS / "toy-sd"), half_precision=False)
    tokenizer, text_encoder = load_text_encoder(prior.model_dir)
    meshes = {name: s.mesh() for name, s in SHAPES.items()}
    meshes["cube_turned_45"] = Mesh(turn_about_z(meshes["cube"].v_pos, 45), meshes["cube"].t_pos_idx)
    meshes["rounded_box_r0.1"] = rounded_box(0.37, 0.1)
    meshes["rounded_box_r0.2"] = rounded_box(0.39, 0.2)
    meshes.update({path: load_mesh(path, args.meshes_up_axis) for path in args.meshes})
    results = {}
    for color in dict.fromkeys(parse_prompt(p)[1] or "red" for p in args.prompts):  # one render per colour
        group = [p for p in args.prompts if (parse_prompt(p)[1] or "red") == color]
        energies = shape_energies(prior, tokenizer, text_encoder, group, meshes, color, views=args.views)
        for prompt, e in energies.items():
            true_order = sorted(SHAPES, key=lambda n: e[n]["guided"])
            results[prompt] = {
                "rank": true_order.index(parse_prompt(prompt)[0].name),
                "preferred": true_order[0],
                "guided": {k: round(v["guided"], 5) for k, v in e.items()},
                "conditional": {k: round(v["conditional"], 5) for k, v in e.items()},
            }
    print(json.dumps({"benchmark": "toy_prior_energy", "results": results}))


if __name__ == "__main__":
    main()

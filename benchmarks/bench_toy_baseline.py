"""Baseline of the toy-world scores: what an untrained geometry (the density blob every run
starts from) and a random one score against each toy shape. A trained run must beat these by a
wide margin for its IoU to mean anything. Prints JSON."""

import json

import torch

from threestudio_like.cli import compose_config, register_resolvers
from threestudio_like.core.trainer import Trainer
from threestudio_like.eval.shape_metrics import volumetric_iou
from threestudio_like.eval.toy_shape import RESOLUTION
from threestudio_like.toyworld.shapes import SHAPES


def main() -> None:
    register_resolvers()
    torch.manual_seed(0)
    cfg = compose_config(["experiment=default"])
    trainer = Trainer(cfg, "/tmp/unused-run-dir")
    blob = trainer.build_stage(0).geometry
    with torch.no_grad():
        threshold = blob.isosurface_threshold_value()
        blob_inside = lambda p: blob.forward_density(p).squeeze(-1) > threshold  # noqa: E731
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(RESOLUTION, RESOLUTION, RESOLUTION, generator=g) > 0.5

    def random_inside(p: torch.Tensor) -> torch.Tensor:
        idx = ((p + 1) / 2 * RESOLUTION).long().clamp(0, RESOLUTION - 1)
        return noise[idx[:, 0], idx[:, 1], idx[:, 2]]

    result = {
        "blob_threshold": threshold,
        "blob_iou": {n: round(volumetric_iou(blob_inside, s.inside, RESOLUTION), 3) for n, s in SHAPES.items()},
        "random_iou": {n: round(volumetric_iou(random_inside, s.inside, RESOLUTION), 3) for n, s in SHAPES.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

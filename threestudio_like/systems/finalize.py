"""What a run does after its stages: export the textured mesh, run the configured evaluators,
render the turntable, write the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..core.config import to_container
from ..eval.evaluator import RunInputs, build_evaluators


def finalize_run(system: Any, trainer: Any, cfg: DictConfig, run_dir: Path, mode: str) -> None:
    """``train``: export + evaluators + turntable + report; ``export``: export + evaluators +
    report; ``test``: turntable."""
    export_cfg = dict(to_container(cfg.get("export")) or {})
    video_cfg = dict(to_container(cfg.get("video")) or {})
    if mode in ("train", "export"):
        if export_cfg.pop("enabled", True):
            export_run(system, Path(run_dir) / "export", export_cfg)
        evaluate_run(system, trainer, cfg)
    if mode in ("train", "test") and video_cfg.get("enabled", True):
        render_turntable(system, Path(run_dir), int(video_cfg.get("n_views", 30)), float(video_cfg.get("fps", 15)))
    if mode in ("train", "export"):
        from ..export.report import write_report

        write_report(run_dir)


@torch.no_grad()
def export_run(system: Any, out_dir: Path, export_cfg: dict) -> dict[str, Path]:
    """Mesh of the final geometry, textured by the material's appearance maps."""
    from ..export.mesh_export import export_mesh

    geometry, material = system.geometry, system.material
    was_training = system.training
    system.eval()
    try:
        mesh = geometry.isosurface()
        threshold = getattr(geometry.cfg, "isosurface_threshold", None)

        def appearance(points: torch.Tensor) -> dict[str, torch.Tensor]:
            return material.appearance(geometry(points.to(system.device)).features)

        hint = (
            (
                f"the geometry's isosurface_threshold={threshold} gave no surface; set "
                f"geometry.isosurface_threshold to a smaller value or 'auto'"
            )
            if threshold is not None
            else "the geometry is empty"
        )
        return export_mesh(
            mesh.__class__(mesh.v_pos.detach(), mesh.t_pos_idx), appearance, out_dir, export_cfg, empty_hint=hint
        )
    finally:
        system.train(was_training)


def evaluate_run(system: Any, trainer: Any, cfg: DictConfig) -> None:
    """Run the config's ``evaluators`` in order on the final model (eval mode, no gradients): each
    one's scores go to ``metrics.jsonl`` as a record with ``stage: "eval"`` and its summary line to
    stderr; an evaluator with nothing to score (None) writes neither."""
    evaluators = build_evaluators(cfg.get("evaluators"))
    if not evaluators:
        return
    inputs = RunInputs.from_config(cfg)
    was_training = system.training
    system.eval()
    try:
        with torch.no_grad():
            for evaluator in evaluators:
                scores = evaluator.evaluate(system, inputs)
                if scores is None:
                    continue
                trainer.logger.log({"stage": "eval", **scores})
                print(evaluator.summary(scores), file=sys.stderr)
    finally:
        system.train(was_training)


def render_turntable(system: Any, run_dir: Path, n_views: int, fps: float) -> Path:
    """``video/turntable.mp4`` of the final model along the test orbit."""
    import numpy as np

    from ..export.video import write_video

    cams = system.data.test_cameras(device=system.device)
    if cams.batch_size != n_views:
        from ..data.cameras import orbit_cameras

        c = system.data.cfg
        cams = orbit_cameras(
            n_views,
            c.eval_elevation_deg,
            c.eval_distance,
            c.eval_fovy_deg,
            c.eval_height,
            c.eval_width,
            device=system.device,
        )
    views = system.render_views(cams)
    frames = (views["rgb"].cpu().numpy() * 255).round().astype(np.uint8)
    return write_video(Path(run_dir) / "video" / "turntable.mp4", list(frames), fps=fps)

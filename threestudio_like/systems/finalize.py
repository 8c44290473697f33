"""What a run does after its stages: export the textured mesh, render the turntable, write
the report (and, for toy-world prompts or toy renders, score the result against the known shape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..core.config import to_container


def finalize_run(system: Any, trainer: Any, cfg: DictConfig, run_dir: Path, mode: str) -> None:
    """``train``: export (+ toy-world score) + turntable + report; ``export``: export + report;
    ``test``: turntable."""
    export_cfg = dict(to_container(cfg.get("export")) or {})
    video_cfg = dict(to_container(cfg.get("video")) or {})
    if mode in ("train", "export") and export_cfg.pop("enabled", True):
        export_run(system, Path(run_dir) / "export", export_cfg)
        score_toy_prompt(system, trainer, toy_description(cfg))
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

        hint = (f"the geometry's isosurface_threshold={threshold} gave no surface; set "
                f"geometry.isosurface_threshold to a smaller value or 'auto'") if threshold is not None else \
            "the geometry is empty"
        return export_mesh(mesh.__class__(mesh.v_pos.detach(), mesh.t_pos_idx), appearance, out_dir, export_cfg,
                           empty_hint=hint)
    finally:
        system.train(was_training)


def toy_description(cfg: DictConfig) -> str:
    """What the toy-world scorer parses: the prompt, else the input image's file name
    (``red_cube.png`` → ``"red cube"``, the shipped toy renders are named so)."""
    if cfg.get("prompt"):
        return str(cfg.get("prompt"))
    return Path(str(cfg.get("image") or "")).stem.replace("_", " ")


@torch.no_grad()
def score_toy_prompt(system: Any, trainer: Any, prompt: str) -> None:
    """When the prompt names a toy shape, score the final surface against it (metrics.jsonl
    record with ``stage: "eval"``, and one summary line on stderr)."""
    import sys

    from ..toyworld.scoring import score_mesh
    from ..toyworld.shapes import parse_prompt

    if parse_prompt(prompt) is None:
        return
    geometry, material = system.geometry, system.material
    system.eval()
    try:
        mesh = geometry.isosurface()
        scores = score_mesh(mesh, prompt, lambda p: material.appearance(geometry(p.to(system.device)).features)["albedo"])
    finally:
        system.train()
    if scores is None:
        return
    trainer.logger.log({"stage": "eval", **scores})
    print(f"toy-world score: IoU {scores['iou']:.3f} vs {scores['toy_shape']} (best other "
          f"{scores['best_other_shape']} {scores['iou_best_other']:.3f}; at the best yaw {scores['iou_any_yaw']:.3f} "
          f"vs {scores['best_other_any_yaw']} {scores['iou_best_other_any_yaw']:.3f}), "
          f"Chamfer {scores['chamfer']:.3f}"
          + (f", colour error {scores['color_error']:.3f} (nearest toy colour: {scores['color_nearest']})"
             if "color_error" in scores else ""), file=sys.stderr)


def render_turntable(system: Any, run_dir: Path, n_views: int, fps: float) -> Path:
    """``video/turntable.mp4`` of the final model along the test orbit."""
    import numpy as np

    from ..export.video import write_video

    cams = system.data.test_cameras(device=system.device)
    if cams.batch_size != n_views:
        from ..data.cameras import orbit_cameras

        c = system.data.cfg
        cams = orbit_cameras(n_views, c.eval_elevation_deg, c.eval_distance, c.eval_fovy_deg,
                             c.eval_height, c.eval_width, device=system.device)
    views = system.render_views(cams)
    frames = (views["rgb"].cpu().numpy() * 255).round().astype(np.uint8)
    return write_video(Path(run_dir) / "video" / "turntable.mp4", list(frames), fps=fps)

"""What a run does after its stages: export the textured mesh, run the configured evaluators,
render the turntable, write the report."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from omegaconf import DictConfig

from ..core.config import PositiveFloat, PositiveInt, Range, parse_structured, to_container
from ..eval.evaluator import RunInputs, build_evaluators


@dataclass
class TurntableConfig:
    """``video:``: the turntable of the final model, along the data's eval orbit (elevation,
    distance, field of view) at its own resolution."""

    enabled: bool = True
    """Render ``video/turntable.mp4`` (train and test modes)."""
    n_views: PositiveInt = 30
    """Frames of one turn."""
    fps: PositiveFloat = 15.0
    """Frames per second."""
    height: Annotated[int, Range(ge=2)] = 512
    """Frame height in pixels."""
    width: Annotated[int, Range(ge=2)] = 512
    """Frame width in pixels."""


def turntable_config(cfg: DictConfig) -> TurntableConfig:
    """The run's ``video:`` section, checked (a :class:`UserError` names what is out of range)."""
    return parse_structured(TurntableConfig, cfg.get("video"), "video")


def finalize_run(system: Any, trainer: Any, cfg: DictConfig, run_dir: Path, mode: str) -> None:
    """``train``: export + evaluators + turntable + report; ``export``: export + evaluators +
    report; ``test``: turntable."""
    export_cfg = dict(to_container(cfg.get("export")) or {})
    video = turntable_config(cfg)
    if mode in ("train", "export"):
        if export_cfg.pop("enabled", True):
            result = export_run(system, Path(run_dir) / "export", export_cfg)
            trainer.logger.log({"stage": "export", **result.metrics()})
        evaluate_run(system, trainer, cfg)
    if mode in ("train", "test") and video.enabled:
        render_turntable(system, Path(run_dir), video)
    if mode in ("train", "export"):
        from ..export.report import write_report

        write_report(run_dir)


@torch.no_grad()
def export_run(system: Any, out_dir: Path, export_cfg: dict) -> Any:
    """Mesh of the final geometry, textured by the material's appearance maps; texels no training
    camera saw are filled from seen ones. Returns the :class:`~..export.mesh_export.ExportResult`."""
    from ..export.mesh_export import export_mesh
    from ..export.visibility import training_viewpoints

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
        c = system.data.cfg
        views = training_viewpoints(c.elevation_range, c.azimuth_range, sum(c.distance_range) / 2, max(c.fovy_range))
        return export_mesh(
            mesh.__class__(mesh.v_pos.detach(), mesh.t_pos_idx),
            appearance,
            out_dir,
            export_cfg,
            empty_hint=hint,
            views=views,
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


def render_turntable(system: Any, run_dir: Path, video: TurntableConfig) -> Path:
    """``video/turntable.mp4`` of the final model: ``video.n_views`` frames of
    ``video.height × video.width`` along the data's eval orbit."""
    import numpy as np

    from ..data.cameras import orbit_cameras
    from ..export.video import write_video

    c = system.data.cfg
    cams = orbit_cameras(
        video.n_views,
        c.eval_elevation_deg,
        c.eval_distance,
        c.eval_fovy_deg,
        video.height,
        video.width,
        device=system.device,
    )
    frames = (system.render_views(cams)["rgb"].cpu().numpy() * 255).round().astype(np.uint8)
    return write_video(Path(run_dir) / "video" / "turntable.mp4", list(frames), fps=video.fps)

"""Evaluate a finished run: load its final model, render the fixed orbit (``eval/orbit.py``),
score it, write ``RUN_DIR/eval.json``.

The final model is rebuilt as ``mode=export`` does (``Trainer.load_finished``: the saved
``config.yaml`` and every stage's checkpoint). What is scored:

* always: multi-view depth consistency (``eval/consistency.py``) and the statistics of the
  exported mesh ``export/<basename>.obj`` (``eval/mesh_metrics.py``; the geometry's isosurface
  when the run exported no OBJ);
* with a prompt and a CLIP model: CLIP score, R-precision, Janus indicator; with an input image
  and a CLIP model: novel-view CLIP similarity to it (``eval/clip_scores.py``);
* image-to-3D (a reference-view term): PSNR/SSIM (masked and not), LPIPS when it imports
  (``eval/reference_view.py``);
* with ``gt``: IoU, Chamfer, normal consistency, F-score against it (prefixed ``gt_``);
* the evaluators the run's config lists (the toy shape score of the toy experiments), their
  scores prefixed with the evaluator's module name (``toy_shape.iou``).

A score that cannot be computed is listed under ``skipped`` with the reason, never an error.

``eval.json``::

    {"run_dir": str, "experiment": str, "prompt": str, "image": str | null,
     "orbit": {n_views, distance, fovy_deg, height, width, elevation_deg},
     "metrics": {name: number | str}, "skipped": {what: why}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ..core.atomic import atomic_write_text
from ..core.config import to_container
from ..core.errors import UserError
from ..export.axes import UpAxis
from .consistency import depth_reprojection
from .evaluator import RunInputs, Scores, build_evaluators
from .orbit import EvalOrbit, render_orbit

EVAL_FILE = "eval.json"


@dataclass
class EvalOptions:
    """What ``threestudio-like eval`` was asked for."""

    gt: Optional[str] = None
    """Ground-truth mesh file, or None."""
    gt_up_axis: UpAxis = "+Y"
    """Up axis of the ground-truth file (``+Y``: as our OBJ exports; ``+Z``: our world frame)."""
    clip: Optional[str] = None
    """CLIP model (directory or hub id in the local cache); None: the run's ``models.clip``."""
    views: int = 12
    """Orbit views."""
    size: int = 0
    """Orbit image side in pixels; 0: the run's evaluation resolution."""
    prompts: Optional[str] = None
    """Prompt set for R-precision; None: the shipped one."""
    tau: float = 0.05
    """F-score distance threshold in world units."""
    device: Optional[str] = None
    """Device; None: the run's ``trainer.device``."""


def load_run_config(run_dir: Path) -> DictConfig:
    """The resolved ``config.yaml`` of a run directory (a :class:`UserError` when there is none)."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory; give a run directory (outputs/<experiment>/<name>@<time>)")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); give the directory a run wrote")
    return OmegaConf.load(path)


def load_final_system(run_dir: Path, cfg: DictConfig) -> Any:
    """The run's final model in eval mode (a :class:`UserError` names a missing stage checkpoint)."""
    from ..core.trainer import Trainer

    return Trainer(cfg, run_dir).load_finished().eval()


def evaluate_run_dir(run_dir: str | Path, options: EvalOptions, note: Callable[[str], None]) -> dict[str, Any]:
    """Score a finished run (see module docstring), write ``eval.json``, return its content;
    ``note`` gets one line for each group of skipped scores."""
    from .clip_scores import load_prompt_set

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if options.gt is not None and not Path(options.gt).is_file():
        raise UserError(f"--gt: no file at '{options.gt}'; give a mesh file (OBJ, PLY, GLB)")
    prompt_set = load_prompt_set(options.prompts)
    if options.device is not None:
        OmegaConf.update(cfg, "trainer.device", options.device, force_add=True)
    system = load_final_system(run_dir, cfg)
    inputs = RunInputs.from_config(cfg)
    orbit = EvalOrbit.of_system(system, options.views, options.size)
    views = render_orbit(system, orbit.cameras(system.device))
    metrics: Scores = {}
    skipped: dict[str, str] = {}
    metrics.update(depth_reprojection(views["depth"], views["opacity"], orbit.cameras()))
    metrics.update(_mesh_scores(system, cfg, run_dir, options, skipped))
    _reference_scores(system, metrics, skipped)
    _clip_scores(cfg, inputs, views["rgb"], orbit, options.clip, prompt_set, metrics, skipped)
    with torch.no_grad():
        for evaluator in build_evaluators(cfg.get("evaluators")):
            scores = evaluator.evaluate(system, inputs)
            prefix = type(evaluator).__module__.rsplit(".", 1)[-1]
            if scores is None:
                skipped[prefix] = "nothing to score for this run's inputs"
            else:
                metrics.update({f"{prefix}.{k}": v for k, v in scores.items()})
    for what, why in skipped.items():
        note(f"{what}: skipped ({why})")
    report = {
        "run_dir": str(run_dir),
        "experiment": str(cfg.get("experiment_name", "")),
        "prompt": inputs.prompt,
        "image": inputs.image,
        "orbit": orbit.as_dict(),
        "metrics": {k: _plain(v) for k, v in metrics.items()},
        "skipped": skipped,
    }
    atomic_write_text(run_dir / EVAL_FILE, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: those become strings."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _mesh_scores(system: Any, cfg: DictConfig, run_dir: Path, options: EvalOptions, skipped: dict[str, str]) -> Scores:
    from ..geometry.base import Mesh
    from .mesh_metrics import compare_meshes, load_mesh, mesh_statistics

    export = dict(to_container(cfg.get("export")) or {})
    basename = str(export.get("basename", "model"))
    obj = run_dir / "export" / f"{basename}.obj"
    if obj.is_file():
        mesh = load_mesh(obj, str(export.get("up_axis", "+Y")), where=str(obj))
        scores = mesh_statistics(mesh, run_dir / "export" / f"{basename}_albedo.png")
    else:
        surface = system.geometry.isosurface()
        mesh = Mesh(surface.v_pos.detach().cpu().float(), surface.t_pos_idx.cpu())
        skipped["exported mesh"] = f"no {obj.relative_to(run_dir)}: mesh statistics of the geometry's isosurface"
        scores = mesh_statistics(mesh) if mesh.num_faces else {"faces": 0}
    if options.gt is None:
        return scores
    if export.get("scale_to_unit_cube"):  # the exported mesh is normalised; the model's own surface is not
        surface = system.geometry.isosurface()
        mesh = Mesh(surface.v_pos.detach().cpu().float(), surface.t_pos_idx.cpu())
    if mesh.num_faces == 0:
        skipped["ground truth"] = "the model has no surface"
        return scores
    gt = load_mesh(options.gt, options.gt_up_axis, where="--gt")
    scores.update({f"gt_{k}": v for k, v in compare_meshes(mesh, gt, options.tau).items()})
    return scores


def _reference_scores(system: Any, metrics: Scores, skipped: dict[str, str]) -> None:
    from .reference_view import reference_term, reference_view_scores

    term = reference_term(system)
    if term is None:
        return
    scores, lpips_missing = reference_view_scores(system, term)
    metrics.update(scores)
    if lpips_missing is not None:
        skipped["ref_lpips"] = lpips_missing


def _clip_scores(
    cfg: DictConfig,
    inputs: RunInputs,
    rgb: torch.Tensor,
    orbit: EvalOrbit,
    clip: Optional[str],
    prompt_set: list[str],
    metrics: Scores,
    skipped: dict[str, str],
) -> None:
    from ..guidance.clip import load_clip
    from .clip_scores import ClipScorer

    name = clip or str(OmegaConf.select(cfg, "models.clip", default="") or "")
    if not name:
        skipped["clip"] = "no CLIP model: pass --clip MODEL"
        return
    try:
        model, tokenizer, norm = load_clip(name)
    except (UserError, OSError) as e:  # not in the cache / not a CLIP model directory
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        skipped["clip"] = f"CLIP model '{name}' not available: {reason}"
        return
    scorer = ClipScorer(model, tokenizer, norm)
    if inputs.prompt:
        metrics.update(scorer.text_scores(rgb, inputs.prompt, prompt_set, orbit.back_view))
    if inputs.image:
        from ..data.image import load_image

        metrics["image_clip_similarity"] = scorer.image_similarity(rgb, load_image(inputs.image, what="input image"))


def format_table(report: dict[str, Any]) -> str:
    """The metrics of an ``eval.json`` as a two-column text table (the skipped ones are the notes)."""
    rows = [(k, _format_value(v)) for k, v in report["metrics"].items()]
    width = max((len(k) for k, _ in rows), default=6) + 2
    lines = [f"{'metric':<{width}}value", f"{'-' * (width - 2):<{width}}-----"]
    lines += [f"{k:<{width}}{v}" for k, v in rows]
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"

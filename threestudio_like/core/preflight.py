"""What a run checks before it writes anything: inputs, models, stage components, output directory.

The CLI calls these after composing the config and before creating the run directory, so a refused
run leaves nothing behind. None of them loads model weights: pretrained models are checked by
their json files (:func:`~threestudio_like.guidance.pretrained.check_pretrained`), stage systems are
built without their guidance (each from scratch: a hand-off geometry is built like a fresh one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from .config import import_target, to_container
from .errors import UserError

CHECKPOINT_BYTES_PER_PARAMETER = 12
"""fp32 weight + Adam's two moments."""
MARGIN_BYTES = 64 << 20
"""Metrics, validation images, the turntable and the report."""


def check_image_inputs(image: Optional[str], depth: Optional[str], needs_alpha: bool) -> None:
    """The input image is readable (and, for image-to-3D, has a non-empty alpha channel); a depth
    map is readable, 2-D and of the image's aspect ratio."""
    from ..data.image import read_depth, read_image

    if not image:
        if depth:
            raise UserError("depth= is given without image=: a depth map belongs to an input image")
        return
    arr = read_image(image, what="image")
    if needs_alpha:
        if arr.shape[-1] not in (2, 4):
            raise UserError(
                f"image {image} has no alpha channel: give an RGBA PNG with the object segmented "
                "(background transparent)"
            )
        if float(arr[..., -1].max()) <= 0.5:
            raise UserError(f"image {image} is fully transparent: its alpha channel holds no object")
    if depth:
        d = read_depth(depth)
        (h, w), (dh, dw) = arr.shape[:2], d.shape[:2]
        if abs(h * dw - w * dh) > max(h, w, dh, dw):  # aspect ratios differ by more than a pixel
            raise UserError(
                f"depth map {depth} is {dh}×{dw} but the image is {h}×{w}: give the depth map of this image"
            )


def stage_components(stage: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any], Any]]:
    """(where, config, class) of every component (a dict with ``_target_``) of a resolved stage
    config, nested ones (loss terms' guidances) included."""
    found = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("_target_"):
                found.append((path, node, import_target(node["_target_"])))
            for key, value in node.items():
                visit(value, f"{path}.{key}")

    visit(stage, where)
    return found


def pretrained_components(stage: dict[str, Any], where: str) -> list[tuple[str, str, str]]:
    """(where, name_or_path, kind) of every component of a resolved stage config whose class
    declares a ``pretrained_kind`` (guidances, prompt processors, also inside loss terms)."""
    return [
        (path, str(node["pretrained_model_name_or_path"]), cls.pretrained_kind)
        for path, node, cls in stage_components(stage, where)
        if node.get("pretrained_model_name_or_path") and getattr(cls, "pretrained_kind", None) is not None
    ]


def check_other_weights(stage: dict[str, Any], where: str) -> None:
    """Weights a component needs beside its pretrained pipeline (MVDream's UNet): each class that
    has a ``check_weights(config, where)`` classmethod finds them (UserError if absent), unloaded."""
    for path, node, cls in stage_components(stage, where):
        check = getattr(cls, "check_weights", None)
        if check is not None:
            check(node, path)


def build_stage_for_check(stage: dict[str, Any], where: str) -> int:
    """Build a stage's system without its guidance (a hand-off geometry from scratch): every
    component validates its config and reads its inputs. Returns its trainable parameter count."""
    from .trainer import DEFAULT_SYSTEM

    stage = dict(stage, geometry_init="scratch")
    cls = import_target(stage.pop("_target_", DEFAULT_SYSTEM))
    system = cls(stage, where=where)
    return sum(p.numel() for p in system.parameters() if p.requires_grad)


def estimate_run_bytes(stage_parameters: list[int], texture_size: int) -> int:
    """Disk a run needs: each stage's checkpoint and ``last.ckpt`` (weights + Adam moments), the
    exported textures (4 maps, PNG and inside the GLB, uncompressed bound) and a margin."""
    checkpoints = CHECKPOINT_BYTES_PER_PARAMETER * (sum(stage_parameters) + max(stage_parameters, default=0))
    return checkpoints + 2 * 4 * 4 * texture_size**2 + MARGIN_BYTES


def check_output_dir(target: Path, needed_bytes: int) -> None:
    """``target`` (a run directory, existing or to be created) can be created and written, and its
    file system has ``needed_bytes`` free. Nothing is left behind."""
    target = Path(os.path.abspath(target))
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create the run directory {target}: {existing} is a file, not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".threestudio_like-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as e:
        raise UserError(f"cannot write the run directory {target}: {existing} is not writable ({e.strerror})") from None
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise UserError(
            f"not enough free disk for this run at {existing}: {free / 2**20:.0f} MiB free, about "
            f"{needed_bytes / 2**20:.0f} MiB needed (checkpoints and export); free space or set output_dir="
        )


def check_resume(
    run_dir: Path, stages: list[str], stage_steps: dict[str, int], mode: str, start_stage: Optional[str] = None
) -> None:
    """A run to resume (``train``) has a readable ``last.ckpt`` of one of its stages and something
    left to train, or, restarted at ``start_stage``, the checkpoints of the stages before it (a
    finished run may be restarted so); one to export or test has every stage's checkpoint."""
    from .checkpoint import load_checkpoint

    ckpts = run_dir / "ckpts"
    if mode != "train":
        for name in stages:
            load_checkpoint(ckpts / f"{name}.ckpt")
        return
    if start_stage is not None:
        if start_stage not in stages:
            raise UserError(f"start_stage '{start_stage}' is not one of the stages {stages}")
        for name in stages[: stages.index(start_stage)]:
            load_checkpoint(ckpts / f"{name}.ckpt")
        return
    if not (ckpts / "last.ckpt").exists():
        return  # interrupted before its first checkpoint: it starts over
    payload = load_checkpoint(ckpts / "last.ckpt")
    if payload.get("stage") not in stages:
        raise UserError(f"checkpoint {ckpts / 'last.ckpt'} is of stage '{payload.get('stage')}', not among {stages}")
    last = stages[-1]
    if payload["stage"] == last and payload.get("stage_done") and payload["global_step"] >= stage_steps[last]:
        raise UserError(
            f"run {run_dir} has finished all its stages; train longer with stage.{last}.steps=N, or "
            f"re-export with mode=export"
        )


def run_dir_target(cfg: Any) -> Path:
    """Where the run will write: ``resume``, ``output_dir``, else under ``outputs_root``."""
    for key in ("resume", "output_dir"):
        if cfg.get(key):
            return Path(str(cfg.get(key)))
    return Path(str(cfg.get("outputs_root", "outputs"))) / str(cfg.get("experiment_name", "run"))


def texture_size(cfg: Any) -> int:
    export = to_container(cfg.get("export")) or {}
    return int(export.get("texture_size", 1024)) if export.get("enabled", True) else 0

"""What a run does after its stages: export the mesh, render the turntable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def finalize_run(system: Any, trainer: Any, cfg: DictConfig, run_dir: Path, mode: str) -> None:
    """``train``: export + turntable; ``export``: export; ``test``: turntable."""
    export_cfg = cfg.get("export") or {}
    if mode in ("train", "test") and export_cfg.get("video", True):
        render_turntable(system, run_dir, int(export_cfg.get("video_views", 30)))


def render_turntable(system: Any, run_dir: Path, n_views: int) -> Path:
    """``video/turntable.mp4`` of the final model along the test orbit."""
    import imageio.v2 as imageio
    import numpy as np

    cams = system.data.test_cameras(device=system.device)
    views = system.render_views(cams)
    frames = (views["rgb"].cpu().numpy() * 255).round().astype(np.uint8)
    path = Path(run_dir) / "video" / "turntable.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, list(frames), fps=max(4, n_views // 4), macro_block_size=1)
    return path

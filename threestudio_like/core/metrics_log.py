"""Training logs: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard.

Every record carries ``global_step`` (the run's step count across its stages: the ``step`` the
trainer passes, else the last one logged, so the final eval and export records sit at the end of
the run) and ``time`` (wall clock, seconds since the epoch).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np


class MetricsLogger:
    """Appends scalars to ``<run>/metrics.jsonl``; mirrors them (and images) to TensorBoard
    under ``<run>/tb`` when enabled and installed."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        records = read_metrics(self.path)  # a resumed or re-exported run goes on from its last step
        self.global_step = int(records[-1].get("global_step", 0)) if records else 0
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: jsonl only
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def log(self, record: dict[str, Any], step: Optional[int] = None) -> None:
        """Append ``record`` with ``global_step`` (``step``, else the last one) and ``time``."""
        if step is not None:
            self.global_step = int(step)
        clean = {k: _plain(v) for k, v in record.items()}
        clean.update(global_step=self.global_step, time=round(time.time(), 3))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean, ensure_ascii=False) + "\n")
        if self._tb is not None:
            prefix = clean.get("stage", "")
            for k, v in clean.items():
                if isinstance(v, (int, float)) and k not in ("step", "global_step", "time"):
                    self._tb.add_scalar(f"{prefix}/{k}" if prefix else k, v, self.global_step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v: Any) -> Any:
    if isinstance(v, (np.ndarray, np.generic)) and v.size == 1 or _is_scalar_tensor(v):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _is_scalar_tensor(v: Any) -> bool:
    import torch

    return isinstance(v, torch.Tensor) and v.numel() == 1


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``."""
    if not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

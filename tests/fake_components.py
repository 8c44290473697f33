"""Minimal stand-ins for geometry/renderer/guidance, so the trainer and CLI plumbing can be
tested without the heavy components. Each still does real (tiny) optimisation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from threestudio_like.eval.evaluator import Evaluator
from threestudio_like.geometry.base import Geometry, GeometryOutput
from threestudio_like.guidance.base import Guidance, GuidanceOutput
from threestudio_like.renderers.base import Renderer, RenderOutput


class DirectionField(Geometry):
    """Features as an MLP of the (unit) position."""

    @dataclass
    class Config:
        n_feature_dims: int = 3
        width: int = 16

    def __init__(self, cfg=None, where="geometry"):
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.net = nn.Sequential(
            nn.Linear(3, self.cfg.width), nn.ReLU(), nn.Linear(self.cfg.width, self.cfg.n_feature_dims)
        )

    def forward(self, points, output_normal=False):
        return GeometryOutput(features=self.net(points))

    @classmethod
    def create_from(cls, other, cfg, where="geometry"):
        new = cls(cfg, where)
        new.load_state_dict(other.state_dict())
        return new


class DirectionRenderer(Renderer):
    """rgb(pixel) = material(field(ray direction)); opacity 1."""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg=None, where="renderer"):
        nn.Module.__init__(self)
        self.parse_config(cfg, where)

    def forward(self, cameras, geometry, material, background, shading="albedo"):
        d = cameras.rays_d.reshape(-1, 3)
        feats = geometry(d).features
        rgb = material(
            feats, d, None, cameras.light_position.repeat_interleave(cameras.height * cameras.width, 0), d, "albedo"
        )
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        ones = torch.ones(b, h, w, 1, dtype=rgb.dtype, device=rgb.device)
        return RenderOutput(rgb=rgb.reshape(b, h, w, 3), opacity=ones, depth=ones)


class NoisyTargetGuidance(Guidance):
    """loss = mean((rgb − (target + σ·noise))²) with fresh noise each call (uses the RNG)."""

    @dataclass
    class Config:
        target: tuple[float, float, float] = (0.8, 0.2, 0.1)
        noise: float = 0.05
        loading_marker: str = ""
        """When set: ``place`` (model loading) touches this file and then takes 30 s."""

    def place(self, device):
        if self.cfg.loading_marker:
            Path(self.cfg.loading_marker).touch()
            time.sleep(30)
        return super().place(device)

    def forward(self, rgb, cameras=None, prompt=None):
        target = torch.tensor(self.cfg.target, dtype=rgb.dtype) + self.cfg.noise * torch.randn(rgb.shape)
        loss = ((rgb - target) ** 2).mean()
        return GuidanceOutput(loss=loss)


class SlowEvaluator(Evaluator):
    """Touches ``marker`` and takes ``seconds`` (an interruption while a run finishes)."""

    @dataclass
    class Config:
        marker: str = ""
        seconds: float = 30.0

    def evaluate(self, system, inputs):
        Path(self.cfg.marker).touch()
        time.sleep(self.cfg.seconds)
        return {"slow": 1.0}

    def summary(self, scores):
        return "slow evaluator done"


FAKE = "fake_components"


def fake_experiment(steps_a: int = 6, steps_b: int = 4, **trainer) -> dict:
    """A two-stage config using the fake components (same shape as a composed Hydra config)."""
    return {
        "experiment_name": "fake",
        "prompt": "a red cube",
        "seed": 0,
        "stages": ["a", "b"],
        "data": {
            "_target_": "threestudio_like.data.cameras.RandomCameraSampler",
            "height": 4,
            "width": 4,
            "batch_size": 2,
            "eval_height": 4,
            "eval_width": 4,
            "n_val_views": 2,
        },
        "geometry": {"_target_": f"{FAKE}.DirectionField"},
        "material": {"_target_": "threestudio_like.materials.base.NoMaterial"},
        "background": {"_target_": "threestudio_like.background.base.SolidBackground"},
        "renderer": {"_target_": f"{FAKE}.DirectionRenderer"},
        "guidance": {"_target_": f"{FAKE}.NoisyTargetGuidance"},
        "loss": {"guidance": 1.0},
        "optimizer": {"name": "Adam", "lr": 0.05},
        "stage": {
            "a": {"steps": steps_a},
            "b": {
                "steps": steps_b,
                "geometry_init": "previous",
                "optimizer": {"lr": 0.02},
                "lr_scheduler": {"name": "cosine", "warmup_steps": 1},
            },
        },
        "trainer": {"device": "cpu", "progress": False, "log_every": 1, "ckpt_every": 0, **trainer},
    }

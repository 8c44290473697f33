"""Placing a prior on its device casts only when the dtype differs — diffusers' models warn about
float32 modules whenever ``to()`` gets a dtype, which printed four warnings per image-to-3D run."""

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models import modeling_utils

from threestudio_like.guidance.base import Frozen
from threestudio_like.guidance.zero123 import Zero123Guidance
from threestudio_like.toyworld.priors import ASSETS


@pytest.fixture
def float32_warnings(monkeypatch):
    warnings = []
    monkeypatch.setattr(modeling_utils.logger, "warning", lambda message, *a, **k: warnings.append(message))
    return lambda: [w for w in warnings if "kept in float32" in w]


def test_frozen_moves_without_a_cast_and_casts_when_asked(float32_warnings):
    frozen = Frozen(UNet2DConditionModel.from_pretrained(str(ASSETS / "tiny-sd"), subfolder="unet"))
    frozen.to("cpu", torch.float32)
    frozen.to(torch.device("cpu"))
    assert not float32_warnings()
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in frozen.module.parameters())
    frozen.to("cpu", torch.float64)
    assert all(p.dtype == torch.float64 for p in frozen.module.parameters())


def test_zero123_guidance_is_placed_without_warnings(float32_warnings):
    guidance = Zero123Guidance({"pretrained_model_name_or_path": str(ASSETS / "tiny-zero123")})
    guidance.place("cpu")
    assert not float32_warnings()
    assert guidance.pipe.dtype == torch.float32 and guidance.pipe.device.type == "cpu"

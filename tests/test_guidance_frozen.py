"""``Frozen.to``: a pretrained model moves to the device, and is cast only when its dtype differs —
diffusers' models warn about float32 modules whenever ``to()`` gets a dtype, which printed two
warnings per image-to-3D run."""

import torch
from diffusers import UNet2DConditionModel
from diffusers.models import modeling_utils

from threestudio_like.guidance.base import Frozen
from threestudio_like.toyworld.priors import ASSETS


def test_moving_without_a_cast_does_not_warn_and_a_cast_casts(monkeypatch):
    warnings = []
    monkeypatch.setattr(modeling_utils.logger, "warning", lambda message, *a, **k: warnings.append(message))
    frozen = Frozen(UNet2DConditionModel.from_pretrained(str(ASSETS / "tiny-sd"), subfolder="unet"))
    warnings.clear()
    frozen.to("cpu", torch.float32)
    frozen.to(torch.device("cpu"))
    assert not [w for w in warnings if "kept in float32" in w], warnings
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in frozen.module.parameters())
    frozen.to("cpu", torch.float64)
    assert all(p.dtype == torch.float64 for p in frozen.module.parameters())

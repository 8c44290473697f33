"""The toy multi-view prior (``toyworld/train_mvdream.py``, ``experiment=toy_mvdream``) and the
Janus probe's handle measure (``eval/toy_handle.py``): the training script saves a UNet that
``guidance=mvdream`` loads, its initialisation is the toy SD's with a silent camera, its samples'
cameras are 4 views 90° apart at one elevation (checked from the camera positions), and the
handle is found on analytic meshes."""

from __future__ import annotations

import math

import pytest
import torch

from threestudio_like.eval.toy_handle import azimuth_error, mesh_handle
from threestudio_like.geometry.base import Mesh
from threestudio_like.guidance.mvdream import MultiViewDiffusionGuidance
from threestudio_like.guidance.mvdream_unet import CrossViewAttnProcessor
from threestudio_like.toyworld import train_mvdream
from threestudio_like.toyworld.priors import ASSETS, load_toy_sd
from threestudio_like.toyworld.shapes import MUG_HANDLE_AZIMUTH_DEG, SHAPES, turn_about_z

TOY_SD = str(ASSETS / "toy-sd")


@pytest.fixture(scope="module")
def dataset():
    """One chunk of the training renders: 16 samples of 4 views."""
    return train_mvdream.multiview_dataset(64, seed=3)


def test_training_saves_a_unet_that_guidance_mvdream_loads(tmp_path):
    out = tmp_path / "toy-mvdream"
    argv = ["--steps", "2", "--batch-size", "8", "--n-images", "64", "--threads", "1"]
    summary = train_mvdream.main([*argv, "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert summary["steps"] == 2 and (out / "config.json").is_file()
    guidance = MultiViewDiffusionGuidance(
        {"pretrained_model_name_or_path": TOY_SD, "multiview_unet": str(out), "half_precision": False}
    )
    unet = guidance.prior.unet
    ema = torch.load(tmp_path / "work" / "state.pt", weights_only=False)["ema"]
    for name, value in unet.state_dict().items():
        assert torch.equal(value.float(), ema["unet." + name].float()), name
    cross_view = {n: isinstance(p, CrossViewAttnProcessor) for n, p in unet.attn_processors.items()}
    assert all(v for n, v in cross_view.items() if n.endswith("attn1.processor"))  # self-attention: across views
    assert not any(v for n, v in cross_view.items() if n.endswith("attn2.processor"))  # text: per view
    sd_unet = load_toy_sd(TOY_SD)["unet"]
    changed = [n for n, v in sd_unet.state_dict().items() if not torch.equal(v, unet.state_dict()[n].float())]
    assert changed  # two steps moved the weights away from the toy SD's


def test_initialisation_is_the_toy_sd_with_a_silent_camera():
    sd_unet = load_toy_sd(TOY_SD)["unet"]
    unet = train_mvdream.multiview_unet_from_sd(sd_unet).eval()
    sd_state, state = sd_unet.state_dict(), unet.state_dict()
    assert sd_state.keys() == state.keys()
    for name, value in state.items():
        if name.startswith("class_embedding.linear_2."):
            assert not value.any() and sd_state[name].any(), name
        else:
            assert torch.equal(value, sd_state[name]), name
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 16, 64, generator=g)
    t = torch.full((4,), 500)
    with torch.no_grad():
        a = unet(x, t, encoder_hidden_states=text, class_labels=torch.randn(4, 16, generator=g)).sample
        b = unet(x, t, encoder_hidden_states=text, class_labels=torch.randn(4, 16, generator=g)).sample
    assert torch.equal(a, b)  # the camera adds nothing until trained


def test_samples_are_four_views_90_degrees_apart_at_one_elevation(dataset):
    images, c2w = train_mvdream.view_groups(dataset)
    assert images.shape == (16, 4, 32, 32, 3) and c2w.shape == (16, 4, 4, 4)
    position = c2w[..., :3, 3].double()  # (G, V, 3): rotated about z by 90° per view, plus the group's jitter
    centred = position[..., :2] - position[..., :2].mean(dim=1, keepdim=True)  # the 4 turns cancel
    azimuth = torch.rad2deg(torch.atan2(centred[..., 1], centred[..., 0]))
    step = (azimuth.diff(dim=1) % 360.0).flatten()
    assert torch.allclose(step, torch.full_like(step, 90.0), atol=1e-3)
    height, radius = position[..., 2], centred.norm(dim=-1)
    assert torch.allclose(height, height[:, :1].expand_as(height), atol=1e-5)
    assert torch.allclose(radius, radius[:, :1].expand_as(radius), atol=1e-5)  # one elevation and distance
    elevation = torch.rad2deg(torch.atan2(height, radius))
    assert elevation.min() > -10 - 3 and elevation.max() < 60 + 3  # the default experiment's range (± jitter)
    assert elevation[:, 0].std() > 5  # and the groups differ


@pytest.fixture(scope="module")
def mug():
    return SHAPES["mug"].mesh()


def test_handle_of_the_true_mug_is_at_its_true_azimuth(mug):
    handle = mesh_handle(mug)
    assert MUG_HANDLE_AZIMUTH_DEG == 180.0  # −X, the back (shapes.py)
    assert abs(azimuth_error(handle["handle_azimuth"], MUG_HANDLE_AZIMUTH_DEG)) < 3.0
    # ring of tube radius 0.05 around a 0.17 circle centred 0.3 out: the part beyond radius 0.36
    assert 0.5e-3 < handle["handle_volume"] < 2 * math.pi**2 * 0.17 * 0.05**2
    assert handle["handle_concentration"] > 0.95


@pytest.mark.parametrize("turn", [90.0, -135.0])
def test_handle_of_a_turned_mug_turns_with_it(mug, turn):
    turned = Mesh(turn_about_z(mug.v_pos, turn), mug.t_pos_idx)
    error = azimuth_error(mesh_handle(turned)["handle_azimuth"], MUG_HANDLE_AZIMUTH_DEG)
    assert abs(error - turn) < 3.0


def test_a_cylinder_has_no_handle_even_off_centre_or_wider():
    cylinder = SHAPES["cylinder"].mesh()
    assert mesh_handle(cylinder)["handle_azimuth"] is None
    shifted = Mesh(cylinder.v_pos + torch.tensor([0.1, -0.05, 0.0]), cylinder.t_pos_idx)
    assert mesh_handle(shifted)["handle_azimuth"] is None
    wide = Mesh(cylinder.v_pos * torch.tensor([1.4, 1.4, 1.0]), cylinder.t_pos_idx)  # a rim all round
    handle = mesh_handle(wide)
    assert handle["handle_azimuth"] is None and handle["handle_volume"] > 0.05 and handle["handle_concentration"] < 0.1


def test_azimuth_error_wraps():
    assert azimuth_error(-170.0, 180.0) == pytest.approx(10.0)
    assert azimuth_error(90.0, -90.0) == pytest.approx(180.0)
    assert azimuth_error(None, 180.0) is None

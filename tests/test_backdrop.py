"""The world-fixed azimuth backdrop (background=backdrop): its formula, the default experiment and
the toy dataset use the same one, and train_sd renders over it and can continue a saved prior."""

import math

import pytest
import torch
import yaml

from threestudio_like.background.base import AzimuthBackdrop, SolidBackground
from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras, spherical_to_position
from threestudio_like.toyworld.dataset import render_toy, sd_background


def _dirs(elevation_deg, azimuth_deg):
    """Unit directions at these world elevations / azimuths (degrees)."""
    return spherical_to_position(elevation_deg, azimuth_deg, torch.ones_like(azimuth_deg))


def test_backdrop_brightness_follows_the_world_azimuth_of_the_ray():
    azimuth = torch.linspace(-180, 180, 37)
    bg = AzimuthBackdrop({"color": (1.0, 0.5, 0.25), "base": 0.7, "amplitude": 0.2, "period": 4})
    for elevation in (-10.0, 0.0, 45.0):
        out = bg(_dirs(torch.full_like(azimuth, elevation), azimuth))
        brightness = 0.7 + 0.2 * torch.cos(torch.deg2rad(4 * azimuth))
        assert torch.allclose(out, brightness[:, None] * torch.tensor([1.0, 0.5, 0.25]), atol=1e-6)
    # a quarter turn (the period) shows the same backdrop; an eighth turn shows its opposite shade
    d = _dirs(torch.zeros(8), torch.rand(8) * 360)
    quarter = d @ torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotate 90° about z
    assert torch.allclose(bg(d), bg(quarter), atol=1e-6)
    c = math.cos(math.radians(45)), math.sin(math.radians(45))
    eighth = d @ torch.tensor([[c[0], c[1], 0.0], [-c[1], c[0], 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(bg(d)[:, 0] + bg(eighth)[:, 0], torch.full((8,), 1.4), atol=1e-5)
    with pytest.raises(UserError, match="within"):
        AzimuthBackdrop({"base": 0.9, "amplitude": 0.2})


def test_camera_centre_ray_sees_the_backdrop_of_its_own_azimuth():
    """A camera at azimuth a looks at the origin along world azimuth a + 180°; cos 4(a + 180°) =
    cos 4a, so the pixel behind the object shows 0.82 + 0.18 cos 4a whatever the elevation."""
    a = torch.tensor([0.0, 22.5, 45.0, 100.0, -135.0])
    cams = make_cameras(
        torch.tensor([0.0, 30.0, 60.0, -10.0, 15.0]), a, torch.full((5,), 2.0), torch.full((5,), 40.0), 2, 2
    )
    centre = cams.rays_d.mean(dim=(1, 2))
    got = sd_background()(centre / centre.norm(dim=-1, keepdim=True))[:, 0]
    assert torch.allclose(got, 0.82 + 0.18 * torch.cos(torch.deg2rad(4 * a)), atol=1e-4)


def test_default_experiment_and_toy_dataset_use_the_shipped_backdrop(repo_root):
    from threestudio_like.core.config import instantiate

    cfg = yaml.safe_load((repo_root / "configs/background/backdrop.yaml").read_text())
    assert instantiate(cfg).cfg == sd_background().cfg  # the yaml holds AzimuthBackdrop's defaults
    defaults = yaml.safe_load((repo_root / "configs/experiment/default.yaml").read_text())["defaults"]
    assert {"override /background": "backdrop"} in defaults


def test_toy_render_over_the_backdrop_changes_only_the_background():
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([30.0]), torch.tensor([2.0]), torch.tensor([45.0]), 48, 48)
    white, alpha = render_toy("cube", "blue", cams, "diffuse")
    over, alpha2 = render_toy("cube", "blue", cams, "diffuse", background=sd_background())
    assert torch.equal(alpha, alpha2)
    a = alpha[0, ..., 0]
    assert (a == 1).sum() > 100 and (a == 0).sum() > 100
    assert torch.allclose(over[0][a == 1], white[0][a == 1])
    expected = sd_background()(cams.rays_d)[0]
    assert torch.allclose(over[0][a == 0], expected[a == 0], atol=1e-5)
    assert torch.allclose(white[0][a == 0], SolidBackground()(cams.rays_d)[0][a == 0])


@pytest.mark.slow
def test_train_sd_over_the_backdrop_continues_a_saved_prior(tmp_path):
    """``--init-from``: at learning rate 0 the exported weights are the saved prior's (AdamW's
    decoupled weight decay scales by 1 − lr·wd = 1); ``--backdrop``: the cached dataset's
    background pixels are the backdrop's shades, not white."""
    from diffusers import UNet2DConditionModel

    from threestudio_like.toyworld import train_sd

    base = str(tmp_path / "base")
    common = ["--n-images", "32", "--batch-size", "4", "--checkpoint-every", "2", "--steps", "2"]
    train_sd.main(common + ["--work-dir", str(tmp_path / "w0"), "--out", base, "--unet-channels", "8", "16", "32"])
    out = str(tmp_path / "bd")
    train_sd.main(
        common + ["--work-dir", str(tmp_path / "w1"), "--out", out, "--backdrop", "--init-from", base, "--lr", "0"]
    )
    a = UNet2DConditionModel.from_pretrained(base, subfolder="unet").state_dict()
    b = UNet2DConditionModel.from_pretrained(out, subfolder="unet").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    data = torch.load(tmp_path / "w1" / "sd-backdrop-data-32-0.pt", weights_only=True)
    bg = data["images"][data["alpha"] == 0].float() / 255
    assert bg.min() >= 0.63 and bg.max() <= 1.0 and bg.std() > 0.03
    with pytest.raises(UserError, match="not a saved toy SD pipeline"):
        train_sd.main(common + ["--work-dir", str(tmp_path / "w2"), "--init-from", str(tmp_path / "nothing")])


@pytest.mark.parametrize("other", ["uniform", "inverted"])
def test_random_colour_background_in_training_only(other):
    from threestudio_like.background.base import RandomColorBackground

    bg = RandomColorBackground({"color": [1.0, 0.8, 0.0], "random_prob": 0.5, "other": other})
    dirs = torch.nn.functional.normalize(torch.randn(400, 2, 2, 3), dim=-1)
    bg.eval()
    assert torch.equal(bg(dirs), torch.tensor([1.0, 0.8, 0.0]).expand(400, 2, 2, 3))
    bg.train()
    out = bg(dirs, torch.Generator().manual_seed(0))
    per_view = out[:, 0, 0]
    assert torch.equal(out, per_view[:, None, None].expand_as(out))  # one colour per view
    changed = (per_view != torch.tensor([1.0, 0.8, 0.0])).any(-1)
    assert 0.4 < changed.float().mean() < 0.6
    if other == "inverted":  # DreamGaussian: white or black
        assert torch.allclose(per_view[changed], torch.tensor([0.0, 0.2, 1.0]).expand(int(changed.sum()), 3))
    else:
        assert per_view[changed].std(0).min() > 0.2  # spread over the colour cube

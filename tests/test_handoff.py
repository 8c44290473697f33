"""Stage hand-off of the appearance field: colours at the switch are unchanged."""

import torch

from threestudio_like.geometry.dmtet import DMTetGeometry
from threestudio_like.geometry.implicit_volume import ImplicitVolume


def test_progressive_band_level_is_carried_into_the_next_stage():
    enc = {"otype": "ProgressiveBandHashGrid", "n_levels": 6, "log2_hashmap_size": 12, "base_resolution": 4,
           "start_level": 2, "start_step": 0, "update_steps": 10}
    vol = ImplicitVolume({"radius": 1.0, "pos_encoding_config": enc, "isosurface_resolution": 16,
                          "normal_type": "none"})
    with torch.no_grad():
        vol.encoding.params.uniform_(-1, 1)  # make every level matter
    vol.update_step(0, 25)  # 2 + 25 // 10 = 4 active levels at the hand-off
    dm = DMTetGeometry.create_from(vol, {"isosurface_resolution": 8})
    dm.update_step(0, 0)  # the next stage starts at step 0
    pts = torch.rand(64, 3) * 1.6 - 0.8
    assert dm.encoding.current_level == 4
    assert torch.allclose(vol(pts).features, dm(pts).features, atol=1e-6)
    dm.update_step(0, 10)
    assert dm.encoding.current_level == 5  # and it keeps unmasking on the same schedule

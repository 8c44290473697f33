"""Stage hand-off of the appearance field: colours at the switch are unchanged."""

import torch

from threestudio_like.geometry.dmtet import DMTetGeometry
from threestudio_like.geometry.implicit_volume import ImplicitVolume


def test_progressive_band_level_is_carried_into_the_next_stage():
    enc = {
        "otype": "ProgressiveBandHashGrid",
        "n_levels": 6,
        "log2_hashmap_size": 12,
        "base_resolution": 4,
        "start_level": 2,
        "start_step": 0,
        "update_steps": 10,
    }
    vol = ImplicitVolume(
        {"radius": 1.0, "pos_encoding_config": enc, "isosurface_resolution": 16, "normal_type": "none"}
    )
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


def test_magic3d_refine_stage_starts_from_the_coarse_nerf(tmp_path):
    """System level (issue 7): after the coarse stage, the refine stage's DMTet mesh matches the
    NeRF's isosurface and its texture field gives the NeRF's colours on that surface."""
    from omegaconf import OmegaConf
    from test_geometry_surface import voxel_iou

    from threestudio_like.cli import compose_config, seed_everything
    from threestudio_like.core.rundir import make_run_dir
    from threestudio_like.core.trainer import Trainer

    cfg = compose_config(["experiment=magic3d", "debug=smoke", "prompt=a red cube"])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.stages = ["coarse"]
    seed_everything(0)
    trainer = Trainer(cfg, make_run_dir(tmp_path / "run"))
    coarse = trainer.fit()
    trainer.names = ["coarse", "refine"]
    refine = trainer.build_stage(1, previous=coarse)
    nerf_mesh, dmtet_mesh = coarse.geometry.isosurface(), refine.geometry.mesh()
    assert voxel_iou(nerf_mesh, dmtet_mesh) > 0.85
    with torch.no_grad():
        pts = dmtet_mesh.v_pos[::7]
        assert torch.allclose(coarse.geometry(pts).features, refine.geometry(pts).features, atol=1e-5)

"""Each real-model experiment's resolved per-stage config against the published recipe, so a
recipe cannot drift silently.

The tables below were written by hand from the sources named in ``SOURCES`` (read 2026-12-04),
in our key names (threestudio's ``camera_distance_range`` is ``data.distance_range``,
``lambda_sds`` is ``loss.guidance``, ``lambda_rgb`` is ``loss.ref_rgb``…). Every value is the
*effective* one: the stage's config parsed by its component's ``Config`` (defaults included).
A key in ``DEVIATIONS`` is a deliberate difference: its value must differ from the table's and
docs/fidelity.md must name the key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from threestudio_like.cli import compose_config
from threestudio_like.core.config import import_target, parse_structured
from threestudio_like.core.stages import resolve_stage, stage_names
from threestudio_like.systems.optimization import OptimizerConfig
from threestudio_like.systems.score_distillation import ScoreDistillationSystem

ROOT = Path(__file__).resolve().parent.parent

SOURCES = {
    "threestudio": "github.com/threestudio-project/threestudio at 28d9d80 (main, 2024-12-16), configs/<file>",
    "makeit3d": "github.com/junshutang/Make-It-3D at 03dffd7: main.py, nerf/utils.py, nerf/sd.py (the paper's code)",
    "mvdream": "github.com/bytedance/MVDream-threestudio at efcd6c3, configs/<file> (and the modules it names)",
}


def shading(diffuse_prob: float = 0.75, textureless_prob: float = 0.5) -> dict[str, float]:
    """threestudio's DiffuseWithPointLight draws (after the albedo-only steps): albedo with
    probability 1 − diffuse_prob, else textureless with textureless_prob, else lit — in our
    disjoint probabilities."""
    return {"material.albedo_prob": 1 - diffuse_prob, "material.textureless_prob": diffuse_prob * textureless_prob}


HASH_GRID = {
    "n_levels": 16,
    "n_features_per_level": 2,
    "log2_hashmap_size": 19,
    "base_resolution": 16,
    "per_level_scale": 1.447269237440378,
}
BLOB = {
    "geometry.density_bias": "blob_magic3d",
    "geometry.density_activation": "softplus",
    "geometry.density_blob_scale": 10.0,
    "geometry.density_blob_std": 0.5,
}
THREESTUDIO_CAMERA_DEFAULTS = {  # RandomCameraDataModuleConfig's defaults, and its collate()
    "data.azimuth_range": [-180.0, 180.0],
    "data.fovy_range": [40.0, 70.0],
    "data.camera_perturb": 0.1,
    "data.camera_perturb_distribution": "uniform",
    "data.center_perturb": 0.2,
    "data.up_perturb": 0.02,
    "data.light_position_perturb": 1.0,
    "data.light_distance_range": [0.8, 1.5],
    "data.light_sample_strategy": "dreamfusion",
    "data.batch_uniform_azimuth": True,
    "data.progressive_until": 0,
    "data.elevation_sampling": "mixed",
}
NO_PERTURB = {"data.camera_perturb": 0.0, "data.center_perturb": 0.0, "data.up_perturb": 0.0}
SD_GUIDANCE = {"guidance.cfg_form": "cond", "guidance.weighting": "sds", "guidance.min_step_percent": 0.02}
ADAM = {"optimizer.lr": 0.01, "optimizer.betas": [0.9, 0.99], "optimizer.eps": 1e-15}
VSD = {
    "guidance._target_": "threestudio_like.guidance.vsd.VariationalScoreDistillation",
    "guidance.guidance_scale": 7.5,
    "guidance.guidance_scale_lora": 1.0,
    "guidance.min_step_percent": 0.02,
    "guidance.max_step_percent": [5000, 0.98, 0.5, 5001],
    "guidance.cfg_form": "uncond",
    "guidance.lora_rank": 4,  # diffusers' LoRAAttnProcessor default, scale 1.0
    "guidance.lora_alpha": 4.0,
    "guidance.lora_init": "gaussian",
    "guidance.camera_embedding_init": "default",
    "guidance.camera_dropout": 0.1,
    "guidance.lora_n_timestamp_samples": 1,
    "guidance.lora_lr": 1e-4,  # optimizer.params.guidance.lr
    "guidance.lora_betas": [0.9, 0.99],
    "guidance.lora_eps": 1e-15,
    "guidance.lora_weight_decay": 0.01,  # AdamW's default: prolificdreamer*.yaml sets none
    "prompt_processor.front_threshold": 30.0,
    "prompt_processor.back_threshold": 30.0,
}
PD_CAMERAS = {
    **THREESTUDIO_CAMERA_DEFAULTS,
    **NO_PERTURB,
    "data.distance_range": [1.0, 1.5],
    "data.elevation_range": [-10.0, 45.0],
    "data.eval_distance": 1.5,
    "data.eval_fovy_deg": 70.0,
}
ZERO123_CAMERAS = {
    **THREESTUDIO_CAMERA_DEFAULTS,
    **NO_PERTURB,
    "data.distance_range": [3.8, 3.8],
    "data.fovy_range": [20.0, 20.0],
    "data.light_distance_range": [7.5, 10.0],
    "data.batch_uniform_azimuth": False,
    "data.eval_distance": 3.8,
    "data.eval_fovy_deg": 20.0,
    "terms.ref.azimuth_deg": 0.0,
    "terms.ref.distance": 3.8,
    "terms.ref.fovy_deg": 20.0,
    "terms.ref.rgb_background": [1.0, 1.0, 1.0],  # gt over comp_rgb_bg: the solid white background
    "terms.ref.rgb_loss": "mse",
    "terms.ref.mask_loss": "mse",
    "terms.ref.normal_smooth_form": "image_sum",
    "terms.ref.guidance_image": "file_alpha",
    "terms.ref.shading": "albedo",  # "diffuse" at ambient ratio 1
    "background._target_": "threestudio_like.background.base.SolidBackground",
    "guidance.guidance_scale": 3.0,
    "guidance.half_precision": False,
    "guidance.weighting": "sds",
    "optimizer.name": "Adam",
    "optimizer.lr": 0.01,
    "optimizer.betas": [0.9, 0.99],
    "optimizer.eps": 1e-8,
}

RECIPES: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {
    ("dreamfusion", "nerf"): (
        "threestudio",
        "dreamfusion-sd.yaml",
        {
            "steps": 10000,
            "val_every": 200,
            "trainer.precision": "16-mixed",
            **THREESTUDIO_CAMERA_DEFAULTS,
            "data.height": 64,
            "data.width": 64,
            "data.batch_size": 1,
            "data.distance_range": [1.5, 2.0],
            "data.elevation_range": [-10.0, 45.0],
            "data.eval_distance": 2.0,
            "data.eval_fovy_deg": 70.0,
            "geometry.radius": 2.0,
            "geometry.normal_type": "analytic",
            **BLOB,
            **{f"geometry.pos_encoding_config.{k}": v for k, v in HASH_GRID.items()},
            "geometry.pos_encoding_config.otype": "ProgressiveBandHashGrid",
            "geometry.pos_encoding_config.start_level": 8,
            "geometry.pos_encoding_config.start_step": 2000,
            "geometry.pos_encoding_config.update_steps": 500,
            "geometry.mlp_network_config.n_neurons": 64,
            "geometry.mlp_network_config.n_hidden_layers": 1,
            "material.ambient_only_steps": 2001,
            "material.albedo_activation": "sigmoid",
            "material.ambient_light_color": 0.1,
            "material.diffuse_light_color": 0.9,
            "material.soft_shading": False,
            **shading(),
            "background.random_aug": 0.0,
            "renderer.num_samples_per_ray": 512,
            **SD_GUIDANCE,
            "guidance.guidance_scale": 100.0,
            "guidance.max_step_percent": 0.98,
            "prompt_processor.front_threshold": 45.0,
            "prompt_processor.back_threshold": 45.0,
            "prompt_processor.overhead_threshold": 60.0,
            "loss.guidance": 1.0,
            "loss.orient": [0, 10.0, 1000.0, 5000],
            "loss.sparsity": 1.0,
            "loss.opaque": 0.0,
            "terms.orient.normalize_by": "visible",
            "optimizer.name": "Adam",
            **ADAM,
            "optimizer.params.background.lr": 0.001,
        },
    ),
    ("magic3d", "coarse"): (
        "threestudio",
        "magic3d-coarse-sd.yaml",
        {
            "steps": 10000,
            "trainer.precision": "16-mixed",
            **THREESTUDIO_CAMERA_DEFAULTS,
            "data.height": 64,
            "data.width": 64,
            "data.batch_size": 1,
            "data.distance_range": [1.5, 2.0],
            "data.elevation_range": [-10.0, 45.0],
            "data.light_sample_strategy": "magic3d",
            "data.eval_distance": 2.0,
            "data.eval_fovy_deg": 70.0,
            "geometry.radius": 2.0,
            "geometry.normal_type": "analytic",
            **BLOB,
            **{f"geometry.pos_encoding_config.{k}": v for k, v in HASH_GRID.items()},
            "geometry.pos_encoding_config.otype": "HashGrid",
            "material.ambient_only_steps": 2001,
            "material.soft_shading": True,
            **shading(),
            "background.random_aug": 0.0,
            "renderer.num_samples_per_ray": 512,
            **SD_GUIDANCE,
            "guidance.weighting": "uniform",
            "guidance.guidance_scale": 100.0,
            "guidance.max_step_percent": 0.98,
            "loss.guidance": 1.0,
            "loss.orient": [0, 10.0, 1000.0, 5000],
            "loss.sparsity": 1.0,
            "loss.opaque": 0.0,
            "terms.orient.normalize_by": "visible",
            "optimizer.name": "Adam",
            **ADAM,
            "optimizer.params.background.lr": 0.001,
        },
    ),
    ("magic3d", "refine"): (
        "threestudio",
        "magic3d-refine-sd.yaml",
        {
            "steps": 5000,
            "geometry_init": "previous",
            **THREESTUDIO_CAMERA_DEFAULTS,
            "data.height": 512,
            "data.width": 512,
            "data.batch_size": 1,
            "data.distance_range": [1.5, 2.0],
            "data.elevation_range": [-10.0, 45.0],
            "data.fovy_range": [30.0, 45.0],
            "data.light_sample_strategy": "magic3d",
            "geometry._target_": "threestudio_like.geometry.dmtet.DMTetGeometry",
            "geometry.radius": 2.0,
            "geometry.isosurface_resolution": 128,
            "geometry.isosurface_deformable_grid": True,
            "geometry.fix_geometry": False,
            "material.ambient_only_steps": 0,
            "material.soft_shading": True,
            **shading(),
            **SD_GUIDANCE,
            "guidance.guidance_scale": 100.0,
            "guidance.max_step_percent": 0.5,
            "loss.guidance": 1.0,
            "loss.normal_consistency": 10000.0,
            "terms.normal_consistency.normals": "vertex",
            "optimizer.name": "Adam",
            **ADAM,
            "optimizer.params": {},
        },
    ),
    ("prolificdreamer", "nerf"): (
        "threestudio",
        "prolificdreamer.yaml",
        {
            "steps": 25000,
            "trainer.precision": "32",
            **PD_CAMERAS,
            "data.resolution_schedule": [[0, 64, 64, 1], [5000, 512, 512, 1]],
            "geometry.radius": 1.0,
            "geometry.normal_type": "none",
            **BLOB,
            **{f"geometry.pos_encoding_config.{k}": v for k, v in HASH_GRID.items()},
            "geometry.pos_encoding_config.otype": "HashGrid",
            "material._target_": "threestudio_like.materials.base.NoMaterial",
            "background.random_aug": 0.5,
            "renderer.num_samples_per_ray": 512,
            **VSD,
            "loss.guidance": 1.0,
            "loss.orient": 0.0,
            "loss.sparsity": 10.0,
            "loss.opaque": [10000, 0.0, 1000.0, 10001],
            "optimizer.name": "AdamW",
            "optimizer.betas": [0.9, 0.99],
            "optimizer.eps": 1e-15,
            "optimizer.weight_decay": 0.01,
            "optimizer.params.geometry.encoding.lr": 0.01,
            "optimizer.params.geometry.density_network.lr": 0.001,
            "optimizer.params.geometry.feature_network.lr": 0.001,
            "optimizer.params.background.lr": 0.001,
        },
    ),
    ("prolificdreamer", "geometry"): (
        "threestudio",
        "prolificdreamer-geometry.yaml",
        {
            "steps": 15000,
            "geometry_init": "previous",
            "guidance_input": "normal",
            "normal_background": "black",
            **PD_CAMERAS,
            "data.height": 512,
            "data.width": 512,
            "data.batch_size": 1,
            "geometry._target_": "threestudio_like.geometry.dmtet.DMTetGeometry",
            "geometry.radius": 1.0,
            "geometry.isosurface_resolution": 128,
            "geometry.isosurface_deformable_grid": True,
            "guidance._target_": "threestudio_like.guidance.sds.ScoreDistillationGuidance",
            **SD_GUIDANCE,
            "guidance.guidance_scale": 100.0,
            "guidance.max_step_percent": [5000, 0.98, 0.5, 5001],
            "prompt_processor.front_threshold": 45.0,
            "prompt_processor.back_threshold": 45.0,
            "loss.guidance": 1.0,
            "loss.normal_consistency": 10000.0,
            "loss.laplacian_smoothness": 10000.0,
            "terms.normal_consistency.normals": "vertex",
            "terms.laplacian_smoothness.form": "umbrella_norm",
            "optimizer.name": "Adam",
            "optimizer.lr": 0.005,
            "optimizer.betas": [0.9, 0.99],
            "optimizer.eps": 1e-15,
        },
    ),
    ("prolificdreamer", "texture"): (
        "threestudio",
        "prolificdreamer-texture.yaml",
        {
            "steps": 30000,
            "geometry_init": "previous",
            **PD_CAMERAS,
            "data.height": 512,
            "data.width": 512,
            "data.batch_size": 1,
            "geometry._target_": "threestudio_like.geometry.dmtet.DMTetGeometry",
            "geometry.radius": 1.0,
            "geometry.isosurface_resolution": 128,
            "geometry.fix_geometry": True,
            "material._target_": "threestudio_like.materials.base.NoMaterial",
            "background.random_aug": 0.0,
            **VSD,
            "loss.guidance": 1.0,
            "optimizer.name": "AdamW",
            "optimizer.betas": [0.9, 0.99],
            "optimizer.eps": 1e-15,
            "optimizer.weight_decay": 0.01,
            "optimizer.params.geometry.encoding.lr": 0.01,
            "optimizer.params.geometry.feature_network.lr": 0.001,
            "optimizer.params.background.lr": 0.001,
        },
    ),
    ("zero123", "nerf"): (
        "threestudio",
        "zero123.yaml",
        {
            "steps": 600,
            "trainer.precision": "16-mixed",
            **ZERO123_CAMERAS,
            "data.resolution_schedule": [[0, 64, 64, 12], [200, 128, 128, 4], [300, 256, 256, 2]],
            "data.elevation_range": [-10.0, 80.0],
            "data.eval_elevation_deg": 5.0,
            "terms.ref.elevation_deg": 5.0,
            "terms.ref.height": {"milestones": [[0, 128], [200, 256], [300, 512]]},
            "terms.ref.width": {"milestones": [[0, 128], [200, 256], [300, 512]]},
            "geometry.radius": 2.0,
            "geometry.normal_type": "analytic",
            **BLOB,
            **{f"geometry.pos_encoding_config.{k}": v for k, v in HASH_GRID.items()},
            "geometry.pos_encoding_config.otype": "HashGrid",
            "geometry.mlp_network_config.n_neurons": 64,
            "geometry.mlp_network_config.n_hidden_layers": 2,
            "material.ambient_only_steps": 100000,
            **shading(textureless_prob=0.05),
            "renderer.num_samples_per_ray": 512,
            "guidance.min_step_percent": [0, 0.4, 0.2, 200],
            "guidance.max_step_percent": [0, 0.85, 0.5, 200],
            "clip_grad_norm": None,
            "loss.guidance": 0.1,
            "loss.ref_rgb": 500.0,
            "loss.ref_mask": 50.0,
            "loss.ref_depth": 0.0,
            "loss.ref_normal_smooth": 8.0,
            "loss.normal_smooth": 8.0,
            "loss.normal_perturb": 8.0,
            "terms.normal_perturb.std": 0.01,
            "loss.orient": 1.0,
            "terms.orient.normalize_by": "visible",
            "loss.sparsity": 0.1,
            "loss.opaque": 0.1,
        },
    ),
    ("zero123", "refine"): (
        "threestudio",
        "zero123-geometry.yaml",
        {
            "steps": 200,
            "geometry_init": "previous",
            **ZERO123_CAMERAS,
            "data.height": 256,
            "data.width": 256,
            "data.batch_size": 8,
            "data.elevation_range": [-10.0, 45.0],
            "terms.ref.elevation_deg": 0.0,
            "terms.ref.height": 512,
            "terms.ref.width": 512,
            "geometry._target_": "threestudio_like.geometry.dmtet.DMTetGeometry",
            "geometry.radius": 2.0,
            "geometry.isosurface_resolution": 128,
            "geometry.isosurface_deformable_grid": True,
            "geometry.fix_geometry": False,
            "material.ambient_only_steps": 10000,
            **shading(textureless_prob=0.0),
            "guidance.min_step_percent": 0.02,
            "guidance.max_step_percent": 0.5,
            "loss.guidance": 1.0,
            "loss.ref_rgb": 10000.0,
            "loss.ref_mask": 100.0,
            "loss.ref_depth": 0.0,
            "loss.ref_normal_smooth": 0.0,
            "loss.normal_consistency": [50, 10000.0, 1000.0, 51],
            "terms.normal_consistency.normals": "vertex",
            "loss.laplacian_smoothness": 0.0,
            "loss.orient": 0.0,
            "loss.sparsity": 0.0,
            "loss.opaque": 0.0,
        },
    ),
    ("makeit3d", "nerf"): (
        "makeit3d",
        "main.py defaults; nerf/utils.py Trainer.train_step; nerf/sd.py StableDiffusion.train_step",
        {
            "steps": 10000,  # --iters
            "data.height": 128,  # --h, --w
            "data.width": 128,
            "data.batch_size": 1,
            "data.elevation_range": [-20.0, 20.0],  # --theta_range 70 110 (polar)
            "data.elevation_sampling": "mixed",  # --uniform_sphere_rate 0.5
            "data.distance_range": [0.8, 1.2],  # --radius_range
            "data.fovy_range": [15.0, 25.0],  # --fovy_range
            **NO_PERTURB,  # rand_poses without jitter
            "material.ambient_only_steps": 1000,  # --albedo_iters
            "material.albedo_prob": 0.5,  # rand > 0.5: albedo; > 0.4: textureless; else lambertian
            "material.textureless_prob": 0.1,
            "guidance.guidance_scale": 10.0,  # --guidance_scale, noise_pred_text + s·(text − uncond)
            "guidance.cfg_form": "cond",
            "guidance.min_step_percent": 0.2,  # --step_range 0.2 0.6
            "guidance.max_step_percent": 0.6,
            "guidance.weighting": "sds",
            "loss.guidance": [399, 0.0, 1.0, 400],  # SDS from --diff_iters 400
            "loss.ref_rgb": 1000.0,  # --lambda_img, L1
            "terms.ref.rgb_loss": "l1",
            "loss.ref_depth": 1.0,  # --lambda_depth, 1 − Pearson
            "loss.clip": 1.0,  # --lambda_clip
            "loss.opaque": [399, 1.4427, 14.427, 400],  # --lambda_entropy 1 in bits, ×10 after diff_iters
            "loss.orient": [399, 0.02, 0.11, 400],  # --lambda_orient 1e-2, added twice (×10 the 2nd after)
            "optimizer.name": "Adan",  # --optim adan
            "optimizer.lr": 0.005,  # 5 × --lr
            "optimizer.betas": [0.98, 0.92, 0.99],
            "optimizer.eps": 1e-8,
            "optimizer.weight_decay": 2e-5,
            "optimizer.max_grad_norm": 5.0,
        },
    ),
    ("makeit3d", "texture"): (
        "makeit3d",
        "main.py defaults",
        {"steps": 3000, "geometry.fix_geometry": True},  # --refine_iters
    ),
}

# threestudio's DeepFloyd IF recipes are its SD ones with the prior swapped (diffed file to file):
# IF stage I + T5 at CFG 20, elevations up to 90° (the data module's default in magic3d-coarse-if);
# dreamfusion-if also takes albedo and background colours through scale_-11_01 (x/2 + 1/2) instead
# of a sigmoid (our neural_env background has no colour-activation option: not compared).
IF_GUIDANCE = {
    "guidance._target_": "threestudio_like.guidance.deepfloyd_if.DeepFloydIFGuidance",
    "guidance.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "guidance.guidance_scale": 20.0,
    "prompt_processor._target_": "threestudio_like.prompt.t5.T5PromptProcessor",
    "prompt_processor.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "prompt_processor.max_length": 77,
}
SD_PROMPTS = {
    "guidance._target_": "threestudio_like.guidance.sds.ScoreDistillationGuidance",
    "prompt_processor._target_": "threestudio_like.prompt.processor.PromptProcessor",
}
RECIPES[("dreamfusion_if", "nerf")] = (
    "threestudio",
    "dreamfusion-if.yaml",
    {
        **RECIPES[("dreamfusion", "nerf")][2],
        **IF_GUIDANCE,
        "data.elevation_range": [-10.0, 90.0],
        "material.albedo_activation": "scale_-11_01",
    },
)
RECIPES[("magic3d_if", "coarse")] = (
    "threestudio",
    "magic3d-coarse-if.yaml",
    {**RECIPES[("magic3d", "coarse")][2], **IF_GUIDANCE, "data.elevation_range": [-10.0, 90.0]},
)
RECIPES[("magic3d_if", "refine")] = (
    "threestudio",
    "magic3d-refine-sd.yaml",
    {**RECIPES[("magic3d", "refine")][2], **SD_PROMPTS},
)

# threestudio-mvdream's recipe: its data module (threestudio/data/random_multiview.py) draws every
# camera quantity once per group of n_view views and its azimuths 360°/n_view apart without
# stratifying across groups; its guidance (multiview_diffusion_guidance.py) computes
# uncond + s(text − uncond), and recon_loss is our x₀-reconstruction weighting `sigma`.
RECIPES[("mvdream", "nerf")] = (
    "mvdream",
    "mvdream-sd21.yaml",
    {
        "steps": 10000,
        "val_every": 200,
        "trainer.precision": "16-mixed",
        **THREESTUDIO_CAMERA_DEFAULTS,
        **NO_PERTURB,
        "data.n_views": 4,
        "data.resolution_schedule": [[0, 64, 64, 8], [5000, 256, 256, 4]],
        "data.relative_distance": True,  # relative_radius: true (the multiview module's default)
        "data.distance_range": [0.8, 1.0],
        "data.fovy_range": [15.0, 60.0],
        "data.elevation_range": [0.0, 30.0],
        "data.batch_uniform_azimuth": False,
        "data.n_val_views": 4,
        "data.eval_distance": 3.0,
        "data.eval_fovy_deg": 40.0,
        "geometry.radius": 1.0,
        "geometry.normal_type": "none",
        **BLOB,
        **{f"geometry.pos_encoding_config.{k}": v for k, v in HASH_GRID.items()},
        "geometry.pos_encoding_config.otype": "HashGrid",
        "material._target_": "threestudio_like.materials.base.NoMaterial",
        "background.random_aug": 0.5,  # random_aug: true at threestudio's random_aug_prob 0.5
        "renderer.num_samples_per_ray": 512,
        "guidance._target_": "threestudio_like.guidance.mvdream.MultiViewDiffusionGuidance",
        "guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
        "guidance.multiview_unet": "MVDream/MVDream",  # model_name sd-v2.1-base-4view
        "guidance.num_views": 4,
        "guidance.guidance_scale": 50.0,
        "guidance.cfg_form": "uncond",
        "guidance.guidance_rescale": 0.5,  # recon_std_rescale
        "guidance.weighting": "sigma",  # recon_loss: true
        "guidance.min_step_percent": [0, 0.98, 0.02, 8000],
        "guidance.max_step_percent": [0, 0.98, 0.5, 8000],
        "guidance.view_dependent_prompting": False,
        "guidance.half_precision": True,
        "prompt_processor._target_": "threestudio_like.prompt.processor.PromptProcessor",
        "prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
        "prompt_processor.negative_prompt": (
            "ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and unclear, "
            "cropped, lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn face, deformed, "
            "dehydrated, bad proportions"
        ),
        "prompt_processor.front_threshold": 30.0,
        "prompt_processor.back_threshold": 30.0,
        "loss.guidance": 1.0,
        "loss.orient": 0.0,
        "loss.sparsity": 0.0,
        "loss.opaque": 0.0,
        "optimizer.name": "AdamW",
        "optimizer.betas": [0.9, 0.99],
        "optimizer.eps": 1e-15,
        "optimizer.weight_decay": 0.01,
        "optimizer.params.geometry.encoding.lr": 0.01,
        "optimizer.params.geometry.density_network.lr": 0.001,
        "optimizer.params.geometry.feature_network.lr": 0.001,
        "optimizer.params.background.lr": 0.001,
    },
)

DEVIATIONS: dict[tuple[str, str], set[str]] = {
    ("dreamfusion", "nerf"): {"guidance.cfg_form"},
    ("magic3d", "coarse"): {"guidance.cfg_form"},
    ("magic3d", "refine"): {"guidance.cfg_form", "geometry.isosurface_resolution"},
    ("dreamfusion_if", "nerf"): {"guidance.cfg_form", "material.albedo_activation"},
    ("magic3d_if", "coarse"): {"guidance.cfg_form"},
    ("magic3d_if", "refine"): {"guidance.cfg_form", "geometry.isosurface_resolution"},
    ("prolificdreamer", "nerf"): {"guidance.camera_embedding_init"},
    ("prolificdreamer", "geometry"): {"guidance.cfg_form", "geometry.isosurface_resolution"},
    ("prolificdreamer", "texture"): {"guidance.camera_embedding_init", "geometry.isosurface_resolution"},
    ("zero123", "nerf"): set(),
    ("zero123", "refine"): {"terms.ref.elevation_deg", "geometry.isosurface_resolution"},
    ("makeit3d", "nerf"): {"data.distance_range", "data.fovy_range"},
    ("makeit3d", "texture"): set(),
    ("mvdream", "nerf"): set(),
}
"""Keys whose value differs from the source on purpose (docs/fidelity.md says why and how to get
the source's)."""

INPUTS = ["prompt=a hamburger", "image=hamburger_rgba.png", "depth=hamburger_depth.npy"]


def typed(component: dict[str, Any]) -> dict[str, Any]:
    """A component's effective config: parsed by its ``_target_``'s Config, defaults included."""
    cls = import_target(component["_target_"])
    return {"_target_": component["_target_"], **dataclasses.asdict(parse_structured(cls.Config, component))}


def effective_stage(cfg, name: str) -> dict[str, Any]:
    stage = resolve_stage(cfg, name)
    out = dataclasses.asdict(parse_structured(ScoreDistillationSystem.Config, stage))
    for comp in ("data", "geometry", "material", "background", "renderer", "guidance", "prompt_processor"):
        if stage.get(comp):
            out[comp] = typed(stage[comp])
    out["terms"] = {n: typed(t) for n, t in stage["terms"].items()}
    optimizer = dataclasses.asdict(parse_structured(OptimizerConfig, stage["optimizer"]))
    if optimizer["weight_decay"] is None:  # the class default
        optimizer["weight_decay"] = 0.01 if optimizer["name"] == "AdamW" else 0.0
    out["optimizer"] = optimizer
    out["trainer"] = dict(cfg.trainer)
    return out


def lookup(config: dict[str, Any], key: str) -> Any:
    """``config`` at dotted ``key``; optimizer param-group prefixes contain dots, and a loss with
    no weight is 0 (no such term)."""
    if key.startswith("loss."):
        return config["loss"].get(key[5:], 0.0)
    if key.startswith("optimizer.params.") and key.endswith(".lr"):
        group = config["optimizer"]["params"].get(key[len("optimizer.params.") : -3])
        return None if group is None else group["lr"]
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(same(actual[k], expected[k]) for k in expected)
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and abs(actual - expected) <= 1e-9 * max(1.0, abs(expected))
    return actual == expected


@pytest.fixture(scope="module")
def stages():
    cache: dict[str, Any] = {}

    def get(experiment: str, name: str) -> dict[str, Any]:
        if experiment not in cache:
            cfg = compose_config([f"experiment={experiment}", *INPUTS])
            cache[experiment] = {n: effective_stage(cfg, n) for n in stage_names(cfg)}
        return cache[experiment][name]

    return get


def test_every_stage_of_every_real_model_experiment_has_a_table(stages):
    experiments = (
        "dreamfusion",
        "dreamfusion_if",
        "magic3d",
        "magic3d_if",
        "prolificdreamer",
        "zero123",
        "makeit3d",
        "mvdream",
    )
    for experiment in experiments:
        cfg = compose_config([f"experiment={experiment}", *INPUTS])
        assert {(experiment, n) for n in stage_names(cfg)} <= RECIPES.keys()
    assert RECIPES.keys() == DEVIATIONS.keys()


@pytest.mark.parametrize("experiment,stage", list(RECIPES))
def test_stage_matches_the_published_recipe(stages, experiment, stage):
    source, file, table = RECIPES[(experiment, stage)]
    config = stages(experiment, stage)
    deviations = DEVIATIONS[(experiment, stage)]
    drift = {
        key: (lookup(config, key), expected)
        for key, expected in table.items()
        if key not in deviations and not same(lookup(config, key), expected)
    }
    assert not drift, f"{experiment}.{stage} differs from {SOURCES[source]} {file}: {{key: (ours, published)}} {drift}"
    for key in deviations:
        assert not same(lookup(config, key), table[key]), f"{key} matches {file} now: drop it from DEVIATIONS"


def test_every_deviation_is_documented():
    doc = (ROOT / "docs" / "fidelity.md").read_text()
    for key in set().union(*DEVIATIONS.values()):
        assert f"`{key}`" in doc, f"docs/fidelity.md does not name the deviation `{key}`"

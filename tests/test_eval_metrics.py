"""The metrics of ``threestudio-like eval`` against analytic cases and independent implementations
(issue 28, item 3): concentric spheres (Chamfer, F-score, IoU), offset cubes (IoU), tilted planes
(normal consistency), known noise (PSNR), a window-by-window SSIM, a consistent vs an
inconsistent scene (depth reprojection), a tiny CLIP (CLIP score, R-precision, Janus)."""

import math

import numpy as np
import pytest
import torch
import trimesh
from test_clip_guidance import _reference_pixels, clip_dir  # noqa: F401 - the tiny CLIP fixture

from threestudio_like.data.cameras import orbit_cameras
from threestudio_like.eval.clip_scores import ClipScorer, load_prompt_set
from threestudio_like.eval.consistency import depth_reprojection
from threestudio_like.eval.image_metrics import psnr, ssim
from threestudio_like.eval.mesh_metrics import compare_meshes, mesh_iou, mesh_statistics, sample_surface_with_normals
from threestudio_like.eval.shape_metrics import chamfer_distance, fscore, normal_consistency
from threestudio_like.geometry.base import Mesh


def _mesh(tm: trimesh.Trimesh) -> Mesh:
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces, dtype=torch.long))


def _sphere(radius: float) -> Mesh:
    return _mesh(trimesh.creation.icosphere(subdivisions=3, radius=radius))


# ---- geometry ------------------------------------------------------------------------------
def test_concentric_spheres_chamfer_fscore_iou_normals():
    """Radii 0.8 and 1: Chamfer |r1 − r2| = 0.2, IoU (r1/r2)³ = 0.512, normals radial in both (1),
    F-score 1 above the gap and 0 below it."""
    inner, outer = _sphere(0.8), _sphere(1.0)
    scores = compare_meshes(inner, outer, tau=0.25, n_points=8000)
    assert scores["chamfer"] == pytest.approx(0.2, abs=0.005)
    assert scores["iou"] == pytest.approx(0.8**3, abs=0.02)
    assert scores["normal_consistency"] == pytest.approx(1.0, abs=0.005)
    assert scores["fscore"] == 1.0
    p, q = sample_surface_with_normals(inner, 2000)[0], sample_surface_with_normals(outer, 2000)[0]
    assert fscore(p, q, tau=0.15) == 0.0


def test_offset_cubes_iou():
    """Unit cubes shifted by s along x: IoU = (1 − s) / (1 + s)."""
    a = trimesh.creation.box(extents=(1, 1, 1))
    for s in (0.25, 0.5):
        b = trimesh.creation.box(extents=(1, 1, 1))
        b.apply_translation((s, 0, 0))
        assert mesh_iou(_mesh(a), _mesh(b)) == pytest.approx((1 - s) / (1 + s), abs=0.02)
    assert mesh_iou(_mesh(a), _mesh(a)) == 1.0


def test_normal_consistency_of_tilted_planes_is_the_cosine():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(500, 3, generator=g) * 2 - 1
    p[:, 2] = 0
    for deg in (0, 30, 60, 90):
        t = math.radians(deg)
        turn = torch.tensor([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
        q, n = p @ turn.T, torch.tensor([[0.0, 0.0, 1.0]]).expand(500, 3)
        assert normal_consistency(p, n, q, n @ turn.T) == pytest.approx(abs(math.cos(t)), abs=1e-5)
        assert normal_consistency(p, -n, q, n @ turn.T) == pytest.approx(abs(math.cos(t)), abs=1e-5)


def test_point_metrics_of_shifted_sets():
    """Two copies of one point set, one shifted by d: Chamfer ≤ d, F-score 1 for τ > d."""
    x = torch.rand(300, 3)
    y = x + torch.tensor([0.01, 0.0, 0.0])
    assert 0 < chamfer_distance(x, y) <= 0.01 + 1e-6
    assert fscore(x, y, tau=0.011) == 1.0
    assert fscore(x, x + 10, tau=0.5) == 0.0


def test_mesh_statistics(tmp_path):
    from PIL import Image

    a = trimesh.creation.box(extents=(1, 1, 1))
    b = trimesh.creation.box(extents=(1, 1, 1))
    b.apply_translation((3, 0, 0))
    two = trimesh.util.concatenate([a, b])
    Image.new("RGB", (32, 16)).save(tmp_path / "albedo.png")
    stats = mesh_statistics(_mesh(two), tmp_path / "albedo.png")
    assert stats == {
        "faces": 24,
        "vertices": 16,
        "components": 2,
        "watertight": 1,
        "texture_width": 32,
        "texture_height": 16,
    }
    holed = _mesh(a)
    holed = Mesh(holed.v_pos, holed.t_pos_idx[1:])
    assert mesh_statistics(holed)["watertight"] == 0
    # an OBJ-style split at a seam (duplicated vertices) is welded before counting
    v, f = _mesh(a).v_pos, _mesh(a).t_pos_idx
    split = Mesh(torch.cat([v, v]), torch.cat([f[:6], f[6:] + len(v)]))
    assert mesh_statistics(split)["components"] == 1 and mesh_statistics(split)["watertight"] == 1


# ---- images --------------------------------------------------------------------------------
def test_psnr_of_known_noise_masked_and_unmasked():
    g = torch.Generator().manual_seed(0)
    target = torch.full((1, 256, 256, 3), 0.5)
    mask = torch.zeros(1, 256, 256, 1)
    mask[:, :128] = 1  # top half
    sigma = torch.where(mask.bool(), 0.02, 0.08)
    pred = target + torch.randn(target.shape, generator=g) * sigma
    assert float(psnr(pred, target, mask=mask)[0]) == pytest.approx(-10 * math.log10(0.02**2), abs=0.1)
    assert float(psnr(pred, target)[0]) == pytest.approx(-10 * math.log10((0.02**2 + 0.08**2) / 2), abs=0.1)


def _ssim_by_windows(x: np.ndarray, y: np.ndarray, mask=None) -> float:
    """Wang et al.'s SSIM computed window by window: 11×11 Gaussian weights (σ 1.5), every
    window inside the image, per channel, averaged (over windows centred in ``mask``)."""
    r = np.arange(11) - 5
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            if mask is not None and not mask[i + 5, j + 5]:
                continue
            for c in range(x.shape[2]):
                a, b = x[i : i + 11, j : j + 11, c], y[i : i + 11, j : j + 11, c]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_window_by_window_implementation():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 24, 20, 3, generator=g, dtype=torch.float64)
    y = (x * 0.7 + 0.3 * torch.rand(1, 24, 20, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    mask = torch.zeros(1, 24, 20, 1, dtype=torch.bool)
    mask[:, 4:14, 6:18] = True
    expected = _ssim_by_windows(x[0].numpy(), y[0].numpy())
    assert float(ssim(x, y)[0]) == pytest.approx(expected, abs=1e-9)
    expected_masked = _ssim_by_windows(x[0].numpy(), y[0].numpy(), mask[0, ..., 0].numpy())
    assert float(ssim(x, y, mask=mask)[0]) == pytest.approx(expected_masked, abs=1e-9)
    assert float(ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-12)


# ---- multi-view consistency ----------------------------------------------------------------
def _sphere_renders(radii, centres=None, n=8, size=48):
    """Depth (distance along the ray) and opacity of view k of a sphere of radius ``radii[k]``
    centred at ``centres[k]``, by ray–sphere intersection."""
    cams = orbit_cameras(n, 15.0, 2.0, 45.0, size, size, dtype=torch.float64)
    depth, opacity = torch.zeros(n, size, size, 1, dtype=torch.float64), torch.zeros(n, size, size, 1)
    for k in range(n):
        c = torch.zeros(3, dtype=torch.float64) if centres is None else torch.tensor(centres[k], dtype=torch.float64)
        o, d = cams.rays_o[k] - c, cams.rays_d[k]
        b = (o * d).sum(-1)
        disc = b**2 - ((o * o).sum(-1) - radii[k] ** 2)
        hit = disc > 0
        depth[k, ..., 0] = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros_like(b))
        opacity[k, ..., 0] = hit.float()
    return depth, opacity, cams


def test_depth_reprojection_of_a_consistent_scene_is_zero():
    depth, opacity, cams = _sphere_renders([0.6] * 8)
    scores = depth_reprojection(depth, opacity, cams)
    assert scores["reprojection_error_px"] < 0.1  # bilinear depth near the silhouette; median 0.02 px
    assert scores["reprojection_consistent_fraction"] > 0.99
    assert scores["reprojection_pixels"] > 8 * 2 * 200


def test_depth_reprojection_of_inconsistent_scenes_is_large():
    for radii, centres in (
        ([0.6, 0.45] * 4, None),  # the shape grows and shrinks with the view
        ([0.6] * 8, [(0.0, 0.0, 0.15 * (k % 2)) for k in range(8)]),  # it jumps up and down
    ):
        depth, opacity, cams = _sphere_renders(radii, centres)
        scores = depth_reprojection(depth, opacity, cams)
        assert scores["reprojection_error_px"] > 1.0
        assert scores["reprojection_consistent_fraction"] < 0.5


# ---- CLIP ----------------------------------------------------------------------------------
def test_clip_scores_plumbing(clip_dir):  # noqa: F811 - the fixture
    """Each score from embeddings computed here with transformers' own feature methods."""
    from transformers import CLIPModel, CLIPTokenizer

    from threestudio_like.guidance.clip import load_clip

    scorer = ClipScorer(*load_clip(clip_dir))
    views = torch.rand(6, 24, 24, 3, generator=torch.Generator().manual_seed(2))
    image = torch.rand(1, 30, 30, 3, generator=torch.Generator().manual_seed(3))
    prompt, others = "a red cube", ["a blue ball", "a green tree", "a tall lamp", "a red cube"]
    scores = scorer.text_scores(views, prompt, others, back=3)

    model, tok = CLIPModel.from_pretrained(clip_dir).eval(), CLIPTokenizer.from_pretrained(clip_dir)

    def text(texts):
        t = tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        return torch.nn.functional.normalize(model.get_text_features(**t).pooler_output, dim=-1)

    def img(x):
        return torch.nn.functional.normalize(model.get_image_features(_reference_pixels(x)).pooler_output, dim=-1)

    with torch.no_grad():
        v, t = img(views), text([prompt, *others[:3]])
        sim = v @ t.T
        back, front = text(["the back of a red cube", "the front of a red cube"])
        i_sim = (v @ img(image).T).mean()
    assert scores["clip_score"] == pytest.approx(float(sim[:, 0].mean()), abs=1e-5)
    assert scores["clip_r_precision"] == pytest.approx(float((sim.argmax(1) == 0).float().mean()))
    assert scores["clip_r_precision_prompts"] == 4  # the prompt once, not twice
    assert scores["janus_back_similarity"] == pytest.approx(float(v[3] @ back), abs=1e-5)
    assert scores["janus_margin"] == pytest.approx(float(v[3] @ back - v[3] @ front), abs=1e-5)
    assert scorer.image_similarity(views, image) == pytest.approx(float(i_sim), abs=1e-5)


def test_shipped_prompt_set():
    prompts = load_prompt_set()
    assert 140 <= len(prompts) <= 170 and len(set(prompts)) == len(prompts)
    assert all(p[0].islower() and not p.endswith(".") for p in prompts)

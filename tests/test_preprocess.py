"""Photo preprocessing (issue 26): photo reading, mask cleanup, framing, and each model backend
with tiny random models saved and loaded back through ``from_pretrained``.

Backends are compared with transformers' own path written out here (``SamProcessor`` +
``post_process_masks``, ``processor.decode(model.generate(...))``, ``post_process_depth_estimation``);
the original SAM checkpoint with a state dict written in segment-anything's layout by an inverse
mapping of this file's own; geometry with synthetic images whose answer is known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from threestudio_like.core.errors import UserError
from threestudio_like.preprocess.framing import frame_object
from threestudio_like.preprocess.masks import bounding_box, clean_mask, feather, fill_holes, largest_component
from threestudio_like.preprocess.photo import load_photo


def disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def make_photo(h: int = 50, w: int = 70, seed: int = 0) -> np.ndarray:
    """A noisy grey background with a red rectangle, (H,W,3) uint8."""
    rng = np.random.default_rng(seed)
    img = (120 + 40 * rng.random((h, w, 3))).astype(np.uint8)
    img[15:35, 25:50] = [220, 30, 30]
    return img


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tiny_models import make_tiny_blip, make_tiny_blip2, make_tiny_depth, make_tiny_sam

    d = tmp_path_factory.mktemp("preprocess_models")
    return {
        "sam": make_tiny_sam(str(d / "sam")),
        "blip": make_tiny_blip(str(d / "blip")),
        "blip2": make_tiny_blip2(str(d / "blip2")),
        "depth_anything": make_tiny_depth(str(d / "depth_anything"), "depth_anything"),
        "dpt": make_tiny_depth(str(d / "dpt"), "dpt"),
    }


# ---- reading photos ----------------------------------------------------------------------
def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 = the stored pixels must turn 90° clockwise to display."""
    stored = make_photo(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "sideways.png", exif=exif)
    photo = load_photo(tmp_path / "sideways.png")
    assert (photo.width, photo.height) == (20, 30)
    assert np.array_equal(photo.rgb, np.rot90(stored, k=-1))


def test_colour_modes_are_converted(tmp_path):
    grey = (np.arange(40 * 30) % 256).astype(np.uint8).reshape(30, 40)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # 16-bit: v·257 = v/255 of the range
    for name in ("grey.png", "grey16.png"):
        photo = load_photo(tmp_path / name)
        assert photo.rgb.dtype == np.uint8 and np.array_equal(photo.rgb, np.repeat(grey[..., None], 3, -1)), name
        assert photo.alpha is None and not photo.has_cutout

    flat = np.zeros((32, 48, 3), np.uint8)
    flat[:, :16] = [200, 40, 40]
    flat[:, 16:32] = [40, 180, 60]
    flat[:, 32:] = [30, 60, 210]
    Image.fromarray(flat).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    photo = load_photo(tmp_path / "cmyk.jpg")
    inner = (slice(4, 28), np.r_[4:12, 20:28, 36:44])
    assert np.abs(photo.rgb[inner].astype(int) - flat[inner].astype(int)).max() <= 8


def test_alpha_is_meaningful_only_when_it_cuts_something_out(tmp_path):
    rgb = make_photo(30, 40)
    shape = disc(30, 40, 20, 15, 8)
    Image.fromarray(np.dstack([rgb, np.where(shape, 255, 0).astype(np.uint8)])).save(tmp_path / "cutout.png")
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 255, np.uint8)])).save(tmp_path / "opaque.png")
    palette = Image.fromarray(np.where(shape, 1, 0).astype(np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 250, 20, 20] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)

    cutout = load_photo(tmp_path / "cutout.png")
    assert cutout.has_cutout and np.array_equal(cutout.alpha >= 0.5, shape) and np.array_equal(cutout.rgb, rgb)
    assert np.array_equal(cutout.on_white()[~shape], np.full(((~shape).sum(), 3), 255, np.uint8))
    assert not load_photo(tmp_path / "opaque.png").has_cutout
    pal = load_photo(tmp_path / "palette.png")
    assert pal.has_cutout and np.array_equal(pal.alpha >= 0.5, shape)
    assert np.array_equal(pal.rgb[shape], np.tile([250, 20, 20], (shape.sum(), 1)))


def test_unreadable_photos_are_refused_clearly(tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (tmp_path / "notes.txt").write_text("hello")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "int32.tif")
    Image.fromarray(np.full((4, 4), 3.5, np.float32)).save(tmp_path / "float.tif")
    cases = {
        "missing.png": "photo not found",
        "corrupt.jpg": "cannot read photo",
        "notes.txt": "cannot read photo",
        "int32.tif": "is a 32-bit integer image with values outside 0…65535",
        "float.tif": "is a floating-point image with values outside [0, 1]",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_photo(tmp_path / name)
    with pytest.raises(UserError, match="is not a file"):
        load_photo(tmp_path)


# ---- mask cleanup ------------------------------------------------------------------------
def test_cleanup_keeps_the_largest_component_and_fills_its_holes():
    big, small = disc(60, 80, 25, 30, 12), disc(60, 80, 65, 20, 6)
    assert np.array_equal(largest_component(big | small), big)
    ring = big & ~disc(60, 80, 25, 30, 5)
    assert np.array_equal(fill_holes(ring), big)
    assert np.array_equal(clean_mask(ring | small), big)
    notch = big.copy()
    notch[30:32, 25:40] = False  # a gap open to the outside is not a hole
    assert not clean_mask(notch)[31, 38]
    assert bounding_box(big) == (13, 18, 37, 42)  # x0, y0, x1, y1 of a radius-12 disc at (25, 30)


def test_feather_is_a_gaussian_edge():
    """A half plane blurred by σ: alpha(x) = Φ((edge − x) / σ) at pixel centres x + 0.5."""
    mask = np.zeros((20, 40), np.float32)
    mask[:, :20] = 1.0
    sigma = 2.0
    out = feather(mask, sigma)
    x = np.arange(40) + 0.5
    expected = np.array([0.5 * (1 + math.erf((20 - xi) / (sigma * math.sqrt(2)))) for xi in x])
    assert np.abs(out[10] - expected).max() < 0.03
    assert np.array_equal(feather(mask, 0.0), mask)


# ---- framing -----------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [0.8, 0.5])
def test_framing_centres_the_object_and_fills_the_fraction(fill):
    h, w, cx, cy, r, size = 100, 120, 70.0, 40.0, 15.0, 128
    shape = disc(h, w, cx, cy, r)
    framing = frame_object(bounding_box(shape), fill, size)
    framed = framing.apply(shape.astype(np.float32), "bilinear")
    assert framed.shape == (size, size)
    x0, y0, x1, y1 = bounding_box(framed >= 0.5)
    assert abs((x0 + x1) / 2 - size / 2) <= 1.0 and abs((y0 + y1) / 2 - size / 2) <= 1.0
    assert abs((x1 - x0) - fill * size) <= 2.0 and abs((y1 - y0) - fill * size) <= 2.0
    assert framed.sum() == pytest.approx(math.pi * (fill * size / 2) ** 2, rel=0.03)
    # the same transform carries any image: a horizontal ramp d = x maps to x0 + (u + 0.5) / scale
    ramp = np.tile(np.arange(w, dtype=np.float32) + 0.5, (h, 1))
    framed_ramp = framing.apply(ramp, "bilinear")
    u = np.arange(size) + 0.5
    expected = framing.box[0] + u / framing.scale
    inside = (expected > 2) & (expected < w - 2)
    assert np.abs(framed_ramp[size // 2, inside] - expected[inside]).max() < 0.6


def test_framing_an_object_at_the_edge_pads_outside_the_photo():
    shape = np.zeros((60, 80), bool)
    shape[20:40, 0:10] = True  # touches the left border
    framing = frame_object(bounding_box(shape), 0.8, 64)
    assert framing.box[0] < 0
    framed = framing.apply(np.dstack([shape, shape]).astype(np.float32), "bilinear", pad="constant")
    x0, y0, x1, y1 = bounding_box(framed[..., 0] >= 0.5)
    assert abs((y0 + y1) / 2 - 32) <= 1.0 and abs((x0 + x1) / 2 - 32) <= 1.0 and abs((y1 - y0) - 0.8 * 64) <= 2
    assert framed[:, :4].max() == 0.0  # padded, not repeated
    edge = framing.apply(np.ones((60, 80), np.float32), "bilinear", pad="edge")
    assert np.allclose(edge, 1.0, atol=1e-5)


# ---- SAM ---------------------------------------------------------------------------------
def _reference_sam_mask(model_dir, rgb, points, box):
    """transformers' own path, thresholded as its post_process_masks does (logits > 0), best candidate."""
    logits, iou, pixels, _ = _reference_sam_logits(model_dir, rgb, points, box)
    best = int(iou.argmax())
    return (logits[best] > 0).numpy(), float(iou[best]), pixels


@pytest.mark.parametrize(
    "points, box",
    [
        ([(30.0, 20.0)], None),
        ([(30.0, 20.0), (55.0, 12.5)], None),
        ([], (10.0, 5.0, 60.0, 40.0)),
        ([(30, 20)], (10, 5, 60, 40)),
    ],
    ids=["point", "points", "box", "point+box"],
)
def test_sam_prompts_match_transformers_processor_path(models, points, box):
    from threestudio_like.preprocess.segment import SamSegmenter

    rgb = make_photo()
    expected, iou, pixels = _reference_sam_mask(models["sam"], rgb, points, box)
    segmenter = SamSegmenter({"model": models["sam"], "device": "cpu", "flip_average": False, "edge_radius": 0})
    assert torch.allclose(segmenter.pixels(rgb)[0], pixels, atol=1e-5)
    seg = segmenter.segment(rgb, points, box)
    assert seg.mask.shape == rgb.shape[:2] and seg.mask.dtype == bool
    assert np.array_equal(seg.mask, expected)
    assert seg.predicted_iou == pytest.approx(iou, abs=1e-6)


def _reference_sam_logits(model_dir, rgb, points, box):
    """transformers' own path: SamProcessor (coordinates, pixels) → SamModel → post_process_masks,
    unthresholded: (candidate logits (C,H,W), predicted IoU (C,), the processor's pixels, the side of
    the model's low-resolution masks)."""
    from transformers import SamModel, SamProcessor

    processor = SamProcessor.from_pretrained(model_dir)
    model = SamModel.from_pretrained(model_dir).eval()
    kwargs = {}
    if points:
        kwargs["input_points"] = [[[list(p) for p in points]]]
        kwargs["input_labels"] = [[[1] * len(points)]]
    if box:
        kwargs["input_boxes"] = [[list(box)]]
    inputs = processor(images=rgb, return_tensors="pt", **kwargs)
    with torch.no_grad():
        out = model(**inputs, multimask_output=len(points) == 1 and box is None)
    logits = processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
    )[0][0]
    return logits, out.iou_scores[0, 0], inputs["pixel_values"], out.pred_masks.shape[-1]


@pytest.mark.parametrize(
    "points, box",
    [([(30.0, 20.0)], None), ([], (10.0, 5.0, 60.0, 40.0)), ([(30, 20)], (10, 5, 60, 40))],
    ids=["point", "box", "point+box"],
)
def test_sam_flip_average_is_the_mean_of_the_photo_and_its_mirror(models, points, box):
    """The mirrored pass is transformers' path on the photo flipped with the prompts flipped by
    hand (pixel x → 69 − x, box edges x0, x1 → 70 − x1, 70 − x0 for a 70-pixel-wide photo)."""
    from threestudio_like.preprocess.segment import SamSegmenter

    rgb = make_photo()
    logits, iou, _, _ = _reference_sam_logits(models["sam"], rgb, points, box)
    flipped_points = [(69 - x, y) for x, y in points]
    flipped_box = (70 - box[2], box[1], 70 - box[0], box[3]) if box else None
    m_logits, m_iou, _, _ = _reference_sam_logits(
        models["sam"], np.ascontiguousarray(rgb[:, ::-1]), flipped_points, flipped_box
    )
    mean_logits, mean_iou = (logits + m_logits.flip(-1)) / 2, (iou + m_iou) / 2
    best = int(mean_iou.argmax())
    seg = SamSegmenter({"model": models["sam"], "device": "cpu", "edge_radius": 0}).segment(rgb, points, box)
    assert seg.predicted_iou == pytest.approx(float(mean_iou[best]), abs=1e-5)
    decided = mean_logits[best].abs() > 1e-4  # pixels whose sign float rounding cannot flip
    assert decided.float().mean() > 0.99
    assert np.array_equal(seg.mask[decided.numpy()], (mean_logits[best] > 0).numpy()[decided.numpy()])


@pytest.mark.parametrize("edge_radius", [3.0, 1.0])
def test_sam_edge_refinement_filters_the_mask_with_the_photo(models, edge_radius):
    """The refined mask is the paper's guided filter (written out in test_guided_filter.py) of
    σ(logits) with the photo as the guide, thresholded at ½, the radius ``edge_radius``
    low-resolution mask pixels in photo pixels. The logits are those of a blurred mask 2 pixels
    off the photo's red rectangle (rows 15–34, columns 25–49): the refined one is closer to it."""
    from test_guided_filter import naive_guided_filter

    from threestudio_like.preprocess.segment import SamSegmenter

    rgb = make_photo()
    rectangle = np.zeros((50, 70), bool)
    rectangle[15:35, 25:50] = True
    yy, xx = np.mgrid[0:50, 0:70] + 0.5
    inside = np.minimum(np.minimum(yy - 17, 37 - yy), np.minimum(xx - 27, 52 - xx))  # shifted 2 px
    logits = torch.from_numpy((inside / 1.5).astype(np.float32))
    low_res = _reference_sam_logits(models["sam"], rgb, [(30.0, 20.0)], None)[3]
    radius = max(1, round(edge_radius * 70 / low_res))
    expected = naive_guided_filter(rgb / 255.0, torch.sigmoid(logits).double().numpy(), radius, 1e-3)
    segmenter = SamSegmenter({"model": models["sam"], "device": "cpu", "edge_radius": edge_radius})
    mask = segmenter.refined_mask(rgb, logits)
    decided = np.abs(expected - 0.5) > 1e-4
    assert decided.mean() > 0.99
    assert np.array_equal(mask[decided], (expected > 0.5)[decided])

    def iou(a):
        return (a & rectangle).sum() / (a | rectangle).sum()

    assert iou(mask) > iou(logits.numpy() > 0) + 0.05


def test_sam_segment_returns_the_refined_mask_of_the_chosen_candidate(models):
    """segment() = refined_mask(photo, the best candidate's logits on transformers' own path); a
    photo given as a view with negative strides (a mirrored array) is read as its copy is."""
    from threestudio_like.preprocess.segment import SamSegmenter

    rgb = make_photo()
    logits, iou, _, _ = _reference_sam_logits(models["sam"], rgb, [(30.0, 20.0)], None)
    segmenter = SamSegmenter({"model": models["sam"], "device": "cpu", "flip_average": False})
    expected = segmenter.refined_mask(rgb, logits[int(iou.argmax())])
    assert np.array_equal(segmenter.segment(rgb, [(30.0, 20.0)]).mask, expected)
    mirrored = rgb[:, ::-1]
    assert np.array_equal(
        segmenter.segment(mirrored, [(39.0, 20.0)]).mask, segmenter.segment(mirrored.copy(), [(39.0, 20.0)]).mask
    )


def test_sam_edge_refinement_keeps_sams_mask_where_it_would_remove_all_of_it(models):
    """Specks on a flat photo have no edge to snap to: the filter averages them below ½ everywhere
    (checked here), and SAM's own mask is returned instead of nothing."""
    from threestudio_like.preprocess.guided_filter import guided_filter
    from threestudio_like.preprocess.segment import SamSegmenter

    rgb = np.full((50, 70, 3), 128, np.uint8)
    specks = np.zeros((50, 70), bool)
    specks[10:40:7, 12:60:9] = True
    logits = torch.from_numpy(np.where(specks, 4.0, -4.0).astype(np.float32))
    segmenter = SamSegmenter({"model": models["sam"], "device": "cpu"})
    radius = max(1, round(segmenter.cfg.edge_radius * 70 / segmenter.low_res))
    guide = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    assert (guided_filter(guide, torch.sigmoid(logits), radius, segmenter.cfg.edge_eps) <= 0.5).all()
    assert np.array_equal(segmenter.refined_mask(rgb, logits), specks)


def to_segment_anything_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers SamModel keys → segment-anything's module names (image_encoder.blocks.N.norm1,
    neck.0…3, prompt_encoder.pe_layer…, mask_downscaling.0/1/3/4/6, output_upscaling.0/1/3,
    MLP layers.0/1/2), written from segment_anything/modeling/*.py."""
    numbered = {
        "neck.conv1": "neck.0",
        "neck.layer_norm1": "neck.1",
        "neck.conv2": "neck.2",
        "neck.layer_norm2": "neck.3",
        "mask_embed.conv1": "mask_downscaling.0",
        "mask_embed.layer_norm1": "mask_downscaling.1",
        "mask_embed.conv2": "mask_downscaling.3",
        "mask_embed.layer_norm2": "mask_downscaling.4",
        "mask_embed.conv3": "mask_downscaling.6",
        "upscale_conv1": "output_upscaling.0",
        "upscale_layer_norm": "output_upscaling.1",
        "upscale_conv2": "output_upscaling.3",
        ".proj_in.": ".layers.0.",
        ".layers.0.weight": ".layers.1.weight",  # the hidden layer of a 3-layer MLP head (before proj_in's rename)
        ".layers.0.bias": ".layers.1.bias",
        ".proj_out.": ".layers.2.",
    }
    out = {}
    for key, value in state.items():
        if key == "shared_image_embedding.positional_embedding":
            continue  # the same matrix as the prompt encoder's
        new = key.replace("vision_encoder.", "image_encoder.").replace(".patch_embed.projection.", ".patch_embed.proj.")
        new = new.replace("image_encoder.layers.", "image_encoder.blocks.")
        new = new.replace(
            "prompt_encoder.shared_embedding.positional_embedding",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        )
        new = new.replace("prompt_encoder.point_embed.", "prompt_encoder.point_embeddings.")
        if "iou_prediction_head" in new or "output_hypernetworks_mlps" in new:
            for a in (".layers.0.weight", ".layers.0.bias", ".proj_in.", ".proj_out."):
                new = new.replace(a, numbered[a])
        for a in [k for k in numbered if not k.startswith(".")]:
            new = new.replace(a, numbered[a])
        new = new.replace(".layer_norm", ".norm")  # block and two-way transformer norms: norm1…4, norm_final_attn
        out[new] = value.clone()
    out["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    out["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    return out


def test_original_sam_checkpoint_round_trip(models, tmp_path):
    """A .pth in segment-anything's layout (written from the tiny HF model) loads to the same model:
    same config, same weights, same masks."""
    from transformers import SamModel

    from threestudio_like.preprocess.segment import SamSegmenter

    hf = SamModel.from_pretrained(models["sam"])
    original = to_segment_anything_layout(hf.state_dict())
    assert any(k.startswith("image_encoder.blocks.1.norm2") for k in original)
    assert "mask_decoder.transformer.norm_final_attn.weight" in original
    assert "mask_decoder.output_hypernetworks_mlps.0.layers.2.weight" in original
    torch.save(original, tmp_path / "sam_vit_t_test.pth")

    rgb = make_photo()
    from_dir = SamSegmenter({"model": models["sam"], "device": "cpu"})
    from_pth = SamSegmenter({"model": str(tmp_path / "sam_vit_t_test.pth"), "device": "cpu"})
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        want, got = getattr(hf.config, part).to_dict(), getattr(from_pth.model.config, part).to_dict()
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "image_size",
            "patch_size",
            "window_size",
            "global_attn_indexes",
            "mlp_dim",
            "mask_input_channels",
            "iou_head_depth",
        ):
            if key in want:
                assert list(np.atleast_1d(got[key])) == list(np.atleast_1d(want[key])), (part, key)
    loaded = from_pth.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in hf.state_dict().items())
    for points, box in (([(30.0, 20.0)], None), ([], (10.0, 5.0, 60.0, 40.0))):
        assert np.array_equal(from_pth.segment(rgb, points, box).mask, from_dir.segment(rgb, points, box).mask)


@pytest.mark.parametrize("size", ["vit_b", "vit_h"])
def test_sam_architecture_is_read_from_the_checkpoint_shapes(size):
    """SAM ViT-B and ViT-H (transformers_conversion's configs), built on the meta device: the
    config read back from the renamed state dict's shapes is theirs."""
    from transformers import SamConfig, SamModel, SamVisionConfig

    from threestudio_like.preprocess.sam_checkpoint import convert_state_dict, sam_config_from_state_dict

    vision = {
        "vit_b": SamVisionConfig(),
        "vit_h": SamVisionConfig(
            hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
        ),
    }[size]
    with torch.device("meta"):
        state = SamModel(SamConfig(vision_config=vision)).state_dict()
    config = sam_config_from_state_dict(convert_state_dict(to_segment_anything_layout(state)))
    v = config.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads) == (
        vision.hidden_size,
        vision.num_hidden_layers,
        vision.num_attention_heads,
    )
    assert (v.image_size, v.patch_size, v.window_size, v.mlp_dim) == (1024, 16, 14, 4 * vision.hidden_size)
    assert list(v.global_attn_indexes) == list(vision.global_attn_indexes)
    d = config.mask_decoder_config
    assert (d.hidden_size, d.num_hidden_layers, d.mlp_dim, d.attention_downsample_rate, d.num_multimask_outputs) == (
        256,
        2,
        2048,
        2,
        3,
    )
    assert config.prompt_encoder_config.mask_input_channels == 16


def test_not_a_sam_checkpoint_is_refused(tmp_path):
    from threestudio_like.preprocess.sam_checkpoint import load_original_sam

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(UserError, match="cannot read .*junk.pth as a segment-anything checkpoint"):
        load_original_sam(tmp_path / "junk.pth")
    with pytest.raises(UserError, match="foreign.pth is not a segment-anything checkpoint"):
        load_original_sam(tmp_path / "foreign.pth")


def test_automatic_mode_picks_the_centred_object():
    """Synthetic candidates, the answer known: a centred disc beats a more confident disc in the
    corner, the background around the disc (higher IoU, but it covers the border), a mask of the
    whole image (too large), a speck (too small) and a wobbly (unstable) centred mask."""
    from threestudio_like.preprocess.segment import SamSegmenter, candidate_scores

    h = w = 64
    centre, corner = disc(h, w, 32, 32, 12), disc(h, w, 8, 8, 6)
    speck = disc(h, w, 32, 32, 1)

    def logits(mask, strength=8.0):
        return torch.from_numpy(np.where(mask, strength, -strength).astype(np.float32))

    candidates = torch.stack(
        [
            logits(centre),
            logits(corner),
            logits(~centre),
            logits(np.ones((h, w), bool)),
            logits(speck),
            logits(centre, strength=0.5),  # |logit| < offset: stability 0
        ]
    )
    iou = torch.tensor([0.90, 0.97, 0.99, 1.0, 0.99, 0.99])
    scores, stability = candidate_scores(candidates, iou, SamSegmenter.Config())
    assert int(torch.argmax(scores)) == 0
    assert stability[0] == 1.0 and stability[5] == 0.0
    assert scores[3] == -math.inf and scores[4] == -math.inf
    assert scores[1] < scores[0] and scores[2] < scores[0]


def _blind_sam(models, tmp_path):
    """The tiny SAM with its last upscaling conv zeroed: every mask logit is 0, nothing is found."""
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(models["sam"])
    with torch.no_grad():
        model.mask_decoder.upscale_conv2.weight.zero_()
        model.mask_decoder.upscale_conv2.bias.zero_()
    model.save_pretrained(tmp_path / "blind_sam")
    SamProcessor.from_pretrained(models["sam"]).save_pretrained(tmp_path / "blind_sam")
    return str(tmp_path / "blind_sam")


def test_automatic_mode_that_finds_nothing_says_what_to_do(models, tmp_path):
    from threestudio_like.preprocess.segment import SamSegmenter

    segmenter = SamSegmenter({"model": _blind_sam(models, tmp_path), "device": "cpu", "points_per_side": 4})
    with pytest.raises(UserError, match=r"segmentation found no object: none of SAM's 48 candidate masks .* --point"):
        segmenter.segment(make_photo())
    random_model = SamSegmenter(
        {"model": models["sam"], "device": "cpu", "points_per_side": 4, "min_area": 0.0, "max_area": 1.0}
    )
    seg = random_model.segment(make_photo())
    assert seg.prompt == "automatic" and seg.mask.shape == (50, 70)


def test_wrong_or_missing_models_are_refused(models, tmp_path):
    from threestudio_like.preprocess.caption import locate_captioner
    from threestudio_like.preprocess.depth import locate_depth_model
    from threestudio_like.preprocess.segment import locate_sam

    with pytest.raises(UserError, match=r"^--sam '.*blip' holds a 'blip' model; it needs a SAM model"):
        locate_sam(models["blip"])
    with pytest.raises(UserError, match=r"^--blip '.*depth_anything' holds a 'depth_anything' model; it needs a BLIP"):
        locate_captioner(models["depth_anything"])
    with pytest.raises(UserError, match=r"^--depth '.*sam' holds a 'sam' model; it needs a depth-estimation model"):
        locate_depth_model(models["sam"])
    with pytest.raises(UserError, match=r"^--depth: pretrained model directory '.*nowhere' does not exist"):
        locate_depth_model(str(tmp_path / "nowhere"))
    with pytest.raises(
        UserError, match=r"^--blip: pretrained model 'nobody/no-such-model' is neither a local directory"
    ):
        locate_captioner("nobody/no-such-model")
    with pytest.raises(UserError, match=r"^--sam: SAM checkpoint not found: .*sam_vit_h_4b8939.pth"):
        locate_sam(str(tmp_path / "sam_vit_h_4b8939.pth"))


# ---- BLIP / BLIP-2 -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, model_class", [("blip", "BlipForConditionalGeneration"), ("blip2", "Blip2ForConditionalGeneration")]
)
def test_caption_is_transformers_generate_decoded(models, name, model_class):
    import transformers

    from threestudio_like.preprocess.caption import Captioner

    rgb = make_photo()
    processor = transformers.AutoProcessor.from_pretrained(models[name])
    model = getattr(transformers, model_class).from_pretrained(models[name]).eval()
    with torch.no_grad():
        ids = model.generate(
            **processor(images=Image.fromarray(rgb), return_tensors="pt"), max_new_tokens=12, num_beams=2
        )
    expected = " ".join(processor.decode(ids[0], skip_special_tokens=True).split())
    captioner = Captioner({"model": models[name], "device": "cpu", "max_new_tokens": 12, "num_beams": 2})
    assert type(captioner.model).__name__ == model_class
    caption = captioner.caption(rgb)
    assert caption == expected and caption and "\n" not in caption


# ---- depth -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["depth_anything", "dpt"])
def test_disparity_is_the_model_output_at_the_image_size(models, name):
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from threestudio_like.preprocess.depth import DepthEstimator

    rgb = make_photo(45, 70)
    processor = AutoImageProcessor.from_pretrained(models[name])
    model = AutoModelForDepthEstimation.from_pretrained(models[name]).eval()
    with torch.no_grad():
        out = model(**processor(images=Image.fromarray(rgb), return_tensors="pt"))
    expected = processor.post_process_depth_estimation(out, target_sizes=[(45, 70)])[0]["predicted_depth"].numpy()
    got = DepthEstimator({"model": models[name], "device": "cpu", "flip_average": False}).disparity(rgb)
    assert got.shape == (45, 70) and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)


def test_depth_flip_average_fits_the_mirror_to_the_first_prediction(models):
    """Transformers' path on the photo and on its mirror (flipped back), the mirror's scale and
    shift fitted by numpy's least-squares line fit, then the mean of the two."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from threestudio_like.preprocess.depth import DepthEstimator

    rgb = make_photo(45, 70)
    processor = AutoImageProcessor.from_pretrained(models["dpt"])
    model = AutoModelForDepthEstimation.from_pretrained(models["dpt"]).eval()

    def predict(image):
        with torch.no_grad():
            out = model(**processor(images=Image.fromarray(np.ascontiguousarray(image)), return_tensors="pt"))
        return processor.post_process_depth_estimation(out, target_sizes=[(45, 70)])[0]["predicted_depth"].numpy()

    first, mirrored = predict(rgb), predict(rgb[:, ::-1])[:, ::-1]
    a, b = np.polyfit(mirrored.ravel().astype(np.float64), first.ravel().astype(np.float64), 1)
    expected = (first + a * mirrored + b) / 2
    got = DepthEstimator({"model": models["dpt"], "device": "cpu"}).disparity(rgb)
    assert not np.allclose(first, a * mirrored + b, atol=1e-3)  # the two passes differ: the test can fail
    assert np.allclose(got, expected, atol=1e-4 * np.abs(expected).max())


def test_metric_depth_is_inverted_to_disparity(models, tmp_path):
    from transformers import AutoModelForDepthEstimation, DPTImageProcessorPil

    from threestudio_like.preprocess.depth import DepthEstimator

    model = AutoModelForDepthEstimation.from_pretrained(models["depth_anything"])
    model.config.depth_estimation_type = "metric"
    model.save_pretrained(tmp_path / "metric")
    DPTImageProcessorPil.from_pretrained(models["depth_anything"]).save_pretrained(tmp_path / "metric")
    rgb = make_photo()
    relative = DepthEstimator({"model": models["depth_anything"], "device": "cpu"})
    metric = DepthEstimator({"model": str(tmp_path / "metric"), "device": "cpu", "flip_average": False})
    assert not relative.inverts and metric.inverts
    with torch.no_grad():
        inputs = metric.processor(images=Image.fromarray(rgb), return_tensors="pt")
        depth = metric.model(**inputs).predicted_depth[:, None]
    expected = 1.0 / torch.nn.functional.interpolate(depth, rgb.shape[:2], mode="bicubic", align_corners=False)[
        0, 0
    ].clamp(min=1e-6)
    assert np.allclose(metric.disparity(rgb), expected.numpy(), rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_gives_nearly_the_float32_results(models, dtype):
    """What runs on CUDA by default (dtype auto → float16), checked on the CPU."""
    from threestudio_like.preprocess.caption import Captioner
    from threestudio_like.preprocess.depth import DepthEstimator
    from threestudio_like.preprocess.segment import SamSegmenter

    rgb = make_photo()
    # one pass: the random tiny SAM's mirrored pass nearly cancels its mask (a few pixels are left);
    # no edge refinement: this compares SAM's own masks (the refinement runs in float32)
    single = {"model": models["sam"], "device": "cpu", "flip_average": False, "edge_radius": 0}
    full = SamSegmenter(single).segment(rgb, [(30.0, 20.0)]).mask
    half = SamSegmenter({**single, "dtype": dtype}).segment(rgb, [(30.0, 20.0)]).mask
    assert full.any() and (full & half).sum() / (full | half).sum() > 0.8
    d32 = DepthEstimator({"model": models["dpt"], "device": "cpu"}).disparity(rgb)
    d16 = DepthEstimator({"model": models["dpt"], "device": "cpu", "dtype": dtype}).disparity(rgb)
    assert d16.dtype == np.float32 and np.corrcoef(d32.ravel(), d16.ravel())[0, 1] > 0.99
    assert Captioner({"model": models["blip"], "device": "cpu", "dtype": dtype, "max_new_tokens": 5}).caption(rgb)

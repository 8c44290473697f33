"""What the preprocessing models' training scripts share (``train_sam``, ``train_blip``, ``train_depth``).

Each trains a small model in a real transformers class on toy photos (:mod:`.photos`) with the
training loop of the toy priors (:func:`.training.train`: AdamW, warm-up then cosine decay, EMA
weights exported, resumable state in ``--work-dir``), and saves the EMA model with its processor
by ``save_pretrained`` into ``--out``, atomically.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from typing import Any, Callable, Optional

import numpy as np

from ..preprocess.framing import Framing, frame_object
from ..preprocess.masks import bounding_box, clean_mask
from ..preprocess.pipeline import MODEL_INPUT_SIZE, PhotoPreprocessor
from .photos import make_photos
from .training import TrainConfig, cached, train_config


def photo_train_parser(
    description: str, out: str, n_photos: int, steps: int, batch_size: int, lr: float, masks: bool = False
):
    """``--steps --batch-size --lr --checkpoint-every --log-every --seed --threads --device
    --n-photos --work-dir --out --init-from`` with the script's defaults, and ``--sam`` with
    ``masks`` (the scripts whose inputs are made with the object's mask: :func:`training_masks`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="photos and training draws")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--n-photos", type=int, default=n_photos, help="toy photos in the training set")
    parser.add_argument("--work-dir", required=True, help="dataset cache, training state, log")
    parser.add_argument("--out", default=out, help="where the model and its processor are saved (save_pretrained)")
    parser.add_argument(
        "--init-from",
        default="",
        metavar="DIR",
        help="a saved model (an earlier --out) to continue from, a new warm-up and cosine decay from --lr "
        "(default: random weights)",
    )
    if masks:
        parser.add_argument(
            "--sam",
            metavar="DIR",
            help="make the inputs with this SAM's masks (point prompts) instead of the true masks with jitter",
        )
    return parser


def prepare_photos(
    args: argparse.Namespace, name: str, dataset: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[TrainConfig, dict[str, Any]]:
    """Set the threads; the :class:`TrainConfig` of ``args`` and the training set
    ``dataset(photos)`` made from ``--n-photos`` toy photos of seed ``--seed``. Both are cached in
    ``--work-dir``: the photos as ``photos-<n>-<seed>.pt`` (the same for every script: copy it into
    another script's work directory to skip making them again), the training set as
    ``<name>-data-<n>-<seed>.pt``."""
    cfg = train_config(args)
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()

    def make() -> dict[str, Any]:
        photos_path = os.path.join(args.work_dir, f"photos-{args.n_photos}-{cfg.seed}.pt")
        return dataset(cached(photos_path, lambda: make_photos(args.n_photos, cfg.seed, progress=True))[0])

    if getattr(args, "sam", None):
        name += "-sam"
    data, made = cached(os.path.join(args.work_dir, f"{name}-data-{args.n_photos}-{cfg.seed}.pt"), make)
    if made:
        print(json.dumps({"photos": args.n_photos, "make_s": round(time.time() - t0, 1)}), flush=True)
    return cfg, data


def save_dir_atomically(out: str, write: Callable[[str], None]) -> None:
    """``write(directory)`` into ``out.partial``, then swap it in for ``out``."""
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)


def save_model_and_processor(model: Any, processor: Any, out: str, half: bool = False) -> None:
    """``save_pretrained`` of a model (its weights in float16 with ``half``) and its processor into
    ``out``, atomically."""

    def write(directory: str) -> None:
        (copy.deepcopy(model).half() if half else model).save_pretrained(directory)
        processor.save_pretrained(directory)

    save_dir_atomically(out, write)


def load_model_and_processor(model_cls: Any, processor_cls: Any, directory: str) -> tuple[Any, Any]:
    """A model saved by :func:`save_model_and_processor` (an earlier ``--out``), in float32, and its
    processor: what ``--init-from`` trains further."""
    import torch

    return model_cls.from_pretrained(directory, torch_dtype=torch.float32), processor_cls.from_pretrained(directory)


def jitter_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``mask`` (H,W) bool with a segmenter's errors, cleaned as ``preprocess`` cleans SAM's masks:
    its edge moved by −2…2 pixels (erosion or dilation; ±1 most often), and 30 % of the time a disc of radius
    2–6 pixels centred on its edge added or cut out."""
    from scipy import ndimage

    out = mask.copy()
    shift = int(rng.choice([-2, -1, 0, 1, 2], p=[0.1, 0.25, 0.3, 0.25, 0.1]))
    if shift:
        grown = (
            ndimage.binary_dilation(out, iterations=shift)
            if shift > 0
            else ndimage.binary_erosion(out, iterations=-shift)
        )
        out = grown if grown.any() else out
    if rng.random() < 0.3:
        edge = np.argwhere(out ^ ndimage.binary_erosion(out))
        y, x = edge[int(rng.integers(len(edge)))]
        yy, xx = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= rng.uniform(2.0, 6.0) ** 2
        changed = out | disc if rng.random() < 0.5 else out & ~disc
        out = changed if changed.any() else out
    return clean_mask(out)


def training_masks(photos: dict[str, Any], sam: Optional[str], seed: int) -> list[np.ndarray]:
    """The object's mask in each photo as the inputs of a model ``preprocess`` feeds are made
    with: with ``sam`` (a SAM directory), that segmenter's mask from a point prompt on a pixel of
    the object drawn at random, cleaned as ``preprocess`` cleans it — the segmenter's own errors
    (the true mask jittered where it finds nothing); without, :func:`jitter_mask` of the true mask."""
    rng = np.random.default_rng(seed)
    masks = [m.numpy() for m in photos["mask"]]
    if not sam:
        return [jitter_mask(m, rng) for m in masks]
    from ..preprocess.segment import SamSegmenter

    segmenter = SamSegmenter({"model": sam, "device": "cpu"})
    out = []
    for rgb, truth in zip(photos["rgb"].numpy(), masks):
        ys, xs = np.nonzero(truth)
        i = int(rng.integers(len(xs)))
        mask = clean_mask(segmenter.segment(rgb, [(float(xs[i]), float(ys[i]))]).mask)
        out.append(mask if mask.any() else jitter_mask(truth, rng))
    return out


def model_framing(mask: np.ndarray) -> Framing:
    """The framing ``preprocess`` gives a mask's object (default ``fill``) at the size its caption
    and depth models see (:data:`~threestudio_like.preprocess.pipeline.MODEL_INPUT_SIZE`)."""
    fill = PhotoPreprocessor.Config.fill
    return Framing(frame_object(bounding_box(mask), fill, MODEL_INPUT_SIZE).box, MODEL_INPUT_SIZE)


def caption_input(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(S,S,3) uint8: the object of ``rgb`` (H,W,3 uint8) cut out by ``mask``, framed, over white —
    what ``preprocess`` captions."""
    framing = model_framing(mask)
    colour = framing.apply(rgb / 255.0, "lanczos").clip(0.0, 1.0)
    a = framing.apply(mask.astype(np.float32), "bilinear")[..., None]
    return np.round((colour * a + (1.0 - a)) * 255.0).astype(np.uint8)


def depth_input(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Framing]:
    """((S,S,3) uint8 framed photo, background included — what ``preprocess`` gives the depth
    model —, its framing)."""
    framing = model_framing(mask)
    return np.round(framing.apply(rgb, "lanczos", pad="edge").clip(0, 255)).astype(np.uint8), framing

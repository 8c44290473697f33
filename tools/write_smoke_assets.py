"""Write the tiny random-weight models ``debug=smoke`` runs with.

Pixel-space tiny SD (``tiny-sd``) and Zero123 (``tiny-zero123``), a tiny CLIP (``tiny-clip``),
the photo preprocessing's tiny SAM, BLIP and depth model (``tiny-sam``, ``tiny-blip``,
``tiny-depth``; weights stored in float16, under 100 kB each), a tiny DeepFloyd IF stage I
with its T5 (``tiny-if``; UNet weights in float16) and a tiny MVDream multi-view UNet in its
converted layout (``tiny-mvdream``; float16), built by the tests' builders
(``tests/tiny_models.py``, ``tests/tiny_zero123.py``, ``tests/tiny_if.py``,
``tests/tiny_mvdream.py``) with their default seeds, into ``threestudio_like/assets/`` (the
shipped copies) or ``--out DIR``; ``--only NAME`` writes one of them.

Usage: ``python tools/write_smoke_assets.py [--out DIR] [--only NAME]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


ASSETS = ("tiny-sd", "tiny-zero123", "tiny-clip", "tiny-sam", "tiny-blip", "tiny-depth", "tiny-if", "tiny-mvdream")
"""The shipped tiny models, by folder name."""


def write_smoke_asset(assets_dir: Path, name: str) -> Path:
    """Build asset ``name`` (one of :data:`ASSETS`) into ``assets_dir/name``; returns its path."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_if import make_tiny_if
    from tiny_models import make_tiny_blip, make_tiny_clip, make_tiny_depth, make_tiny_sam, make_tiny_sd
    from tiny_mvdream import make_tiny_mvdream
    from tiny_zero123 import make_tiny_zero123

    path = assets_dir / name
    if name == "tiny-sd":
        make_tiny_sd(str(path), pixel_space=True)
    elif name == "tiny-zero123":
        make_tiny_zero123(str(path), pixel_space=True)
    elif name == "tiny-clip":
        make_tiny_clip(str(path))
    elif name == "tiny-if":  # fp16 UNet weights keep it under 200 kB; the prior runs them in fp32 on CPU
        make_tiny_if(str(path))
        weights_to_float16(path / "unet" / "diffusion_pytorch_model.safetensors")
    elif name == "tiny-mvdream":  # the UNet alone: VAE, scheduler and text encoder are tiny-sd's
        make_tiny_mvdream(str(path))
        weights_to_float16(path / "diffusion_pytorch_model.safetensors")
    else:
        make = {"tiny-sam": make_tiny_sam, "tiny-blip": make_tiny_blip, "tiny-depth": make_tiny_depth}[name]
        make(str(path))
        weights_to_float16(path / "model.safetensors")
    return path


def write_smoke_assets(assets_dir: Path) -> list[Path]:
    """Every asset of :data:`ASSETS` into ``assets_dir``; returns their paths."""
    return [write_smoke_asset(assets_dir, name) for name in ASSETS]


def weights_to_float16(path: Path) -> None:
    """Rewrite a safetensors file with its floating-point tensors in float16 (the models are cast
    to their run dtype after loading)."""
    from safetensors.torch import load_file, save_file

    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "threestudio_like" / "assets",
        help="assets directory (default: the package's)",
    )
    parser.add_argument("--only", choices=ASSETS, help="write this asset only (default: all)")
    args = parser.parse_args()
    paths = [write_smoke_asset(args.out, args.only)] if args.only else write_smoke_assets(args.out)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()

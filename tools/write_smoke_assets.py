"""Write the tiny random-weight models ``debug=smoke`` runs with.

Pixel-space tiny SD (``tiny-sd``) and Zero123 (``tiny-zero123``), a tiny CLIP (``tiny-clip``) and
the photo preprocessing's tiny SAM, BLIP and depth model (``tiny-sam``, ``tiny-blip``,
``tiny-depth``; weights stored in float16, under 100 kB each), built by the tests' builders
(``tests/tiny_models.py``, ``tests/tiny_zero123.py``) with their default seeds, into
``threestudio_like/assets/`` (the shipped copies) or ``--out DIR``.

Usage: ``python tools/write_smoke_assets.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_smoke_assets(assets_dir: Path) -> list[Path]:
    """``assets_dir``/tiny-sd, tiny-zero123, tiny-clip, tiny-sam, tiny-blip, tiny-depth; returns their paths."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tiny_blip, make_tiny_clip, make_tiny_depth, make_tiny_sam, make_tiny_sd
    from tiny_zero123 import make_tiny_zero123

    paths = [
        Path(make_tiny_sd(str(assets_dir / "tiny-sd"), pixel_space=True)),
        Path(make_tiny_zero123(str(assets_dir / "tiny-zero123"), pixel_space=True)),
        Path(make_tiny_clip(str(assets_dir / "tiny-clip"))),
    ]
    for name, make in (("tiny-sam", make_tiny_sam), ("tiny-blip", make_tiny_blip), ("tiny-depth", make_tiny_depth)):
        paths.append(Path(make(str(assets_dir / name))))
        weights_to_float16(paths[-1] / "model.safetensors")
    return paths


def weights_to_float16(path: Path) -> None:
    """Rewrite a safetensors file with its floating-point tensors in float16 (the preprocessing
    models are cast to their run dtype after loading)."""
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
    for path in write_smoke_assets(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()

"""Write the tiny random-weight models ``debug=smoke`` runs with.

Pixel-space tiny SD (``tiny-sd``) and Zero123 (``tiny-zero123``) and a tiny CLIP (``tiny-clip``),
built by the tests' builders (``tests/tiny_models.py``, ``tests/tiny_zero123.py``) with their
default seeds, into ``threestudio_like/assets/`` (the shipped copies) or ``--out DIR``.

Usage: ``python tools/write_smoke_assets.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_smoke_assets(assets_dir: Path) -> list[Path]:
    """``assets_dir``/tiny-sd, tiny-zero123, tiny-clip; returns their paths."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tiny_clip, make_tiny_sd
    from tiny_zero123 import make_tiny_zero123

    return [
        Path(make_tiny_sd(str(assets_dir / "tiny-sd"), pixel_space=True)),
        Path(make_tiny_zero123(str(assets_dir / "tiny-zero123"), pixel_space=True)),
        Path(make_tiny_clip(str(assets_dir / "tiny-clip"))),
    ]


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

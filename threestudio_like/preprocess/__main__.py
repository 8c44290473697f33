"""``python -m threestudio_like.preprocess PHOTO …``: the command ``threestudio-like preprocess``."""

import sys

from ..core.interrupts import signals_handled
from .cli import main

if __name__ == "__main__":
    with signals_handled():
        code = main()
    sys.exit(code)

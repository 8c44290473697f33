"""``python -m threestudio_like.eval RUN_DIR …``: the command ``threestudio-like eval``."""

import sys

from ..core.interrupts import signals_handled
from .command import main

if __name__ == "__main__":
    with signals_handled():
        code = main()
    sys.exit(code)

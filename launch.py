"""python launch.py [experiment=NAME] [prompt="…"] [key=value …]  — see README.md."""

import sys

from threestudio_like.cli import main

if __name__ == "__main__":
    sys.exit(main())

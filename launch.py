"""python launch.py [experiment=NAME] [prompt="…"] [key=value …]  — see README.md."""

from threestudio_like.core.interrupts import handle_signals

if __name__ == "__main__":
    handle_signals()  # before the heavier imports: a Ctrl-C there is one line too
    from threestudio_like.cli import console_main

    console_main()

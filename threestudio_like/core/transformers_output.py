"""What transformers prints while models load: a "Loading weights" bar per model, which breaks
into our own progress lines (run, preprocess, eval)."""

from __future__ import annotations


def hide_loading_bars() -> None:
    """transformers' progress bars off for this process; its warnings stay (a checkpoint whose
    weights were not all initialised still says so)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def quiet_transformers() -> None:
    """The bars off and transformers' advisory warnings too (errors still print): for the commands
    whose models are checked against their expected layouts before they load."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    hide_loading_bars()

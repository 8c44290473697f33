"""What transformers prints while models load: a "Loading weights" bar per model, which breaks
into our own progress lines (run, preprocess, eval)."""

from __future__ import annotations

import sys


def hide_loading_bars() -> None:
    """transformers' progress bars off for this process; its warnings stay (a checkpoint whose
    weights were not all initialised still says so). transformers takes the switch from
    huggingface_hub's when it is imported, so a run whose models do not need transformers does
    not import it (0.6 s of start-up)."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    logging = sys.modules.get("transformers.utils.logging")
    if logging is not None:  # imported already: it keeps its own copy of the switch
        logging.disable_progress_bar()


def quiet_transformers() -> None:
    """The bars off and transformers' advisory warnings too (errors still print): for the commands
    whose models are checked against their expected layouts before they load."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    hide_loading_bars()

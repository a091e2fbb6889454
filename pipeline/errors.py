"""Errors a stage raises for problems the user can fix (missing inputs, bad paths).

The `d2d` CLI prints these as one line and exits non-zero; anything else is a bug.
Bad *configuration* is a `ValueError` from the config's `__post_init__`, naming the field.
"""


class StageError(RuntimeError):
    """A stage cannot run: a missing input artifact, an unreadable path, a failed job."""

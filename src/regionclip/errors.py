"""User-facing errors.

Every error that a user can cause with bad input (a missing file, a malformed JSON field, a wrong config
value) is raised as a :class:`RegionCLIPError` whose message names the file, field or value and says what was
expected. The command line prints such errors as one line and exits with status 2; anything else is a bug.
"""

from __future__ import annotations


class RegionCLIPError(ValueError):
    """An error caused by the user's input, with a message that says what was expected."""


class CheckpointError(RegionCLIPError):
    """A checkpoint file is missing, corrupt, unsafe or of the wrong kind."""


class ConfigError(RegionCLIPError):
    """A config file or override has an unknown key or a value of the wrong type."""


class DataError(RegionCLIPError):
    """A dataset file is missing or malformed."""

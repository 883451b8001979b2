"""Exceptions whose message is meant for the user: one sentence saying what is wrong and what to do.

The CLI prints the message of any :class:`RemulError` without a traceback and exits with code 2.
"""


class RemulError(ValueError):
    """Base class for errors caused by user input (files, configs, arguments)."""


class DataError(RemulError):
    """A data file or structure that cannot be used (unreadable, missing labels, NaN, ...)."""


class ConfigError(RemulError):
    """A configuration file or option that is invalid."""


class CheckpointError(RemulError):
    """A model or checkpoint file that cannot be loaded."""

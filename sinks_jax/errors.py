"""Errors that end a run with one clear message (the CLI prints them without a traceback)."""


class SinksJaxError(Exception):
    """Base class: the message names the problem and what to do about it."""


class ConfigError(SinksJaxError, ValueError):
    """An invalid config value, an unknown field or an unknown preset."""


class DataError(SinksJaxError):
    """A missing or malformed data file."""


class TrainingDivergedError(SinksJaxError):
    """The loss became NaN or infinite."""


class OutputError(SinksJaxError):
    """An output folder that cannot hold a run: in use, foreign, a file, or not writable."""

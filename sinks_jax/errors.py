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


class Terminated(BaseException):
    """SIGTERM (from `timeout`, a batch scheduler or `kill`) ended the run: like Ctrl-C, not an
    error of the run's input; the CLI exits 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum

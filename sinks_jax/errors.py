"""Errors that end a run with one clear message (the CLI prints them without a traceback), the
argument parser whose usage errors are one such line, and the signals that end a run as an
exception (so that its folder can say how it ended)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn


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


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


@contextlib.contextmanager
def signals_raise(
    make: Callable[[int], BaseException], *signums: int, resend_s: float = 1.0
) -> Iterator[threading.Event]:
    """While open, each of `signums` raises `make(signum)` in the main thread (Python's
    default for SIGTERM and SIGHUP would end the process on the spot); the previous handlers
    come back on leaving. Elsewhere than the main thread nothing changes.

    An exception raised from a signal handler can be swallowed: a garbage-collector callback
    (JAX has one) or a `__del__` running at that moment drops it ("Exception ignored"). So
    until the exception is seen to land the signal is sent again every `resend_s` seconds, and
    a dropped one is not printed.
    It lands when it leaves this block, or when the caller catches it inside the block and sets
    the yielded event."""
    landed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield landed
        return
    lock = threading.Lock()  # no resend once the handlers are restored

    def resend(signum: int) -> None:
        with lock:
            if not landed.is_set():
                os.kill(os.getpid(), signum)

    raised: list[BaseException] = []  # ours: swallowed ones are sent again, not printed

    def handler(signum: int, frame: object) -> None:
        if not landed.is_set():
            timer = threading.Timer(resend_s, resend, (signum,))
            timer.daemon = True
            timer.start()
        raised.append(make(signum))
        raise raised[-1]

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        if not any(info.exc_value is e for e in raised):
            previous_hook(info)

    previous = {s: signal.signal(s, handler) for s in signums}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield landed
    except BaseException:
        landed.set()
        raise
    finally:
        with lock:
            landed.set()
            for s, h in previous.items():
                signal.signal(s, h)
        sys.unraisablehook = previous_hook

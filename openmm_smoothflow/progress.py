"""Progress bars that stay out of logs: the one way the package shows progress on long work.

On a terminal, a normal ``tqdm`` bar. When the stream is not a terminal (a pipe, a redirected log, a
batch job), the bar refreshes at most every :data:`LOG_INTERVAL_S` seconds and prints each refresh
on its own line, so a log holds a few lines per long loop instead of thousands of carriage-return
updates. ``enabled=False`` (the commands' ``--no-progress``) shows nothing.
"""
import sys
from typing import Any, Iterable, Optional, TextIO

LOG_INTERVAL_S = 60.0  # seconds between refreshes when the stream is not a terminal


def is_terminal(stream: Optional[TextIO]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Optional[Iterable] = None, total: Optional[float] = None, desc: Optional[str] = None,
                 unit: str = "it", enabled: bool = True, file: Optional[TextIO] = None, leave: bool = True,
                 **kwargs: Any):
    """A ``tqdm`` bar over ``iterable`` (or updated by hand up to ``total``) on ``file`` (default stderr).

    Not a terminal: sparse (``mininterval`` = :data:`LOG_INTERVAL_S`, one line per refresh, the final
    state kept); ``enabled=False``: disabled. Other keyword arguments go to ``tqdm``.
    """
    from tqdm import tqdm

    file = sys.stderr if file is None else file
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if is_terminal(file):
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, leave=leave, **kwargs)
    kwargs.update(mininterval=LOG_INTERVAL_S, maxinterval=max(LOG_INTERVAL_S, 10 * LOG_INTERVAL_S),
                  miniters=0, ascii=True, dynamic_ncols=False, ncols=100)
    return _LogLines(iterable, total=total, desc=desc, unit=unit, file=_Lines(file), leave=True, **kwargs)


class _Lines:
    """A stream that drops tqdm's bare cursor moves ("\r", the "\n" after the final line)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, s: str) -> None:
        if s.strip("\r\n"):
            self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()


def _log_lines_class():
    from tqdm import tqdm

    class LogLines(tqdm):
        """tqdm writing each refresh as a line of its own (no carriage returns), forced refreshes
        (``set_postfix``, ``set_description``) rate-limited like the others."""

        def refresh(self, nolock=False, lock_args=None):
            now = self._time()
            if now - getattr(self, "_last_line", float("-inf")) < self.mininterval:
                return
            self._last_line = now
            return super().refresh(nolock=nolock, lock_args=lock_args)

        @staticmethod
        def status_printer(file):
            def print_status(s):
                if s:
                    file.write(s.rstrip() + "\n")
                    file.flush()

            return print_status

    return LogLines


def _LogLines(*args, **kwargs):  # noqa: N802 - builds the tqdm subclass on first use (tqdm imported lazily)
    return _log_lines_class()(*args, **kwargs)

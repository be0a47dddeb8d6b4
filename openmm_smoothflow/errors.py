"""Errors, warnings and the exit codes of ``smoothflow`` (the floor: imports nothing of the package).

Exit codes, which scripts can rely on (``cli.main`` maps exceptions onto them):

====  ==========================================================================================
0     success
1     the run failed: MD stopped by a health check or an OpenMM error, training without a
      best checkpoint or with a non-finite loss (:class:`RunFailed`); also any unexpected error
2     bad usage or input: invalid arguments, missing / unreadable / mismatching files, refusals
      to overwrite or to share a run directory (``ValueError``, ``OSError``, :class:`UsageError`)
130   interrupted (Ctrl-C; ``train`` writes ``last.pt`` first); 143 on SIGTERM
====  ==========================================================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class SmoothflowWarning(UserWarning):
    """Something a user should know about a run that still goes on (printed as one line by the CLI)."""


class UsageError(ValueError):
    """Invalid arguments of a command or library call (exit code 2)."""


class RunFailed(RuntimeError):
    """A run that started but gave no sound result (exit code 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (exit code 143)."""


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an exception that ended a command."""
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, RunFailed):
        return EXIT_FAILED
    if isinstance(exc, (ValueError, OSError)):
        return EXIT_USAGE
    return EXIT_FAILED


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (``Type: ...`` for exceptions that are not ours)."""
    text = " ".join(part.strip() for part in str(exc).strip().splitlines() if part.strip())
    if isinstance(exc, (RunFailed, UsageError, ValueError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

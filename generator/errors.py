"""One family for every error a user can cause or meet: each prints as one line.

The CLI has one handler for ``HandbookError``: it prints ``handbook: <message>``
and exits non-zero. Anything else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class HandbookError(ValueError):
    """A user-facing failure whose message, alone on one line, says what and where."""


class ResultError(HandbookError):
    """A result file that cannot be used; the message names the file and the field."""


class RunError(HandbookError):
    """The run could not start at all (not one experiment's failure)."""


class PageError(HandbookError):
    """A page that cannot be rendered; the message names the page and what is wrong."""


class FigureError(HandbookError):
    """A figure that cannot be drawn; the message names the experiment and the figure."""


class SummaryError(HandbookError):
    """``summarize`` could not derive its figures from a stored result."""


class InputError(HandbookError):
    """Bad command-line input or a bad model config handed to the estimator."""


def one_line(message: object) -> str:
    """The message as one printable line: control characters (a stray newline, a carriage return) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))

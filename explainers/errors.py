"""Errors the engine raises for the user's input.

Every error a user can cause (a bad file, an unknown model, a parameter out of range) is an
:class:`ExplainerError` with a one-line message; the command line prints it and exits with 2,
the app shows it in place of the result. Anything else is a bug and keeps its traceback.
"""


class ExplainerError(ValueError):
    """A one-line, user-facing error (bad input, unavailable model, invalid parameter)."""


class Cancelled(RuntimeError):
    """Raised from a progress callback to stop a long run; the engine lets it propagate."""


def one_line(e: BaseException | str, limit: int = 160) -> str:
    """An exception (or text) as one line of at most ``limit`` characters, for a user to read."""
    text = " ".join(str(e).split())
    if not text and isinstance(e, BaseException):
        text = type(e).__name__
    return text[:limit]

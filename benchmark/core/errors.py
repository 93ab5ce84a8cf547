"""Errors a user can cause, told apart from bugs.

Everything a user can get wrong (a config value, a name, a missing file, weights that do not
fit the model, a cache folder that is not ours, data with NaN) raises a subclass of
:class:`PolysemyError`; the command line prints it as ONE line and exits with status 2. Any
other exception is a bug: the command line keeps its full traceback (exit status 1) and adds
one line naming the plug-in it came from, when it came from one (:func:`blame_plugin`).

Each concrete error also derives from the built-in exception it used to be (``ValueError``,
``KeyError``, ``OSError``, ...), so callers that catch those keep working.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

PLUGIN_NOTE = "raised inside plug-in "


class NotApplicable(Exception):
    """A method or metric does not apply to this target/split; the message says why.

    Not an error: the tables show "—" with the reason (never 0)."""


class PolysemyError(Exception):
    """Base of every error a user can cause; shown as one line, exit status 2."""


class InputError(PolysemyError, ValueError):
    """A value given by the user (argument, parameter, config entry) is not allowed."""


class InputTypeError(PolysemyError, TypeError):
    """An argument the user gave is of a kind that is not accepted (e.g. an unknown keyword)."""


class MissingFileError(PolysemyError, FileNotFoundError):
    """A file or folder the user named (or that set-up should have provisioned) is absent."""


def blame_plugin(err: BaseException, kind: str, name: str, module: str) -> None:
    """Attach to an unexpected exception a note naming the plug-in whose code raised it
    (shown under the traceback); user errors and ``NotApplicable`` are left alone."""
    notes = getattr(err, "__notes__", ())
    if not isinstance(err, (PolysemyError, NotApplicable)) and not any(n.startswith(PLUGIN_NOTE) for n in notes):
        err.add_note(f"{PLUGIN_NOTE}{kind} {name!r} ({module})")


def blamed_plugin(err: BaseException) -> str | None:
    """The plug-in named by :func:`blame_plugin` on ``err``, if any."""
    for note in getattr(err, "__notes__", ()):
        if note.startswith(PLUGIN_NOTE):
            return note[len(PLUGIN_NOTE):]
    return None


@contextmanager
def plugin_code(kind: str, name: str, plugin: object) -> Iterator[None]:
    """Run a plug-in's code; an unexpected exception leaving it names the plug-in."""
    try:
        yield
    except Exception as err:
        blame_plugin(err, kind, name, type(plugin).__module__)
        raise

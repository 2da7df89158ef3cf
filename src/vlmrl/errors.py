"""The project's one user-error type: a problem with what a person gave, not a bug.

The command line catches :class:`UserError` alone and prints its message as one line (it names
the key, file or row and what is allowed); every other exception is a bug and keeps its
traceback. ``UserError`` is a ``ValueError`` and :class:`MissingFileError` also a
``FileNotFoundError``, so library callers that catch those keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad config value, name, path or file that a person can fix; the message says how."""


class MissingFileError(UserError, FileNotFoundError):
    """A path the user named does not exist (or is not the kind of directory needed)."""


class PluginImportError(UserError, ImportError):
    """A user's ``reward.modules`` entry cannot be imported."""


class NonFiniteError(UserError):
    """Training met NaN or inf that skipping cannot mend (weights, optimizer state, too many
    skipped updates in a row); the message names the step, the last good checkpoint and the knob."""


class StorageError(UserError, OSError):
    """The run directory cannot be written (read-only, a file where a folder belongs, a full
    disk); the message names the path and what the OS said."""

    @classmethod
    def from_os(cls, err: OSError, doing: str, path: object) -> StorageError:
        """One line from an ``OSError`` raised while ``doing`` (e.g. "writing checkpoint") at
        ``path``: the file the OS names when it names one, else ``path``; errno kept."""
        where = err.filename or path
        out = cls(f"{doing}: {where}: {err.strerror or err}")
        out.errno = err.errno
        return out

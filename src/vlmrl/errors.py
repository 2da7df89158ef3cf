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

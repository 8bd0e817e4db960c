"""Exceptions with a meaning for the user.

`UserInputError` is the user's to fix (a bad file, a bad option): the CLI prints its
message without a traceback and exits with code 2. Anything else is our failure (exit 1).
"""

from __future__ import annotations


class HistocurateError(Exception):
    """Base of all errors raised on purpose by histocurate."""


class UserInputError(HistocurateError):
    """Bad input or usage: the message says what is wrong and what to do."""


class SchemaError(UserInputError):
    """A table does not match its declared schema (missing column, wrong type, version)."""


class WorkspaceError(UserInputError):
    """The workspace is missing, incomplete, or its configuration is invalid."""


class SlideError(UserInputError):
    """A slide cannot be opened or lacks what a stage needs (such as its resolution)."""


class GeometryError(UserInputError, ValueError):
    """A geometry that cannot be used (not WKB, not a polygon, an open ring)."""

"""Errors that name what was wrong and where, so a user can fix their input."""

from __future__ import annotations


class DefectkitError(Exception):
    """Base class for every error defectkit raises on purpose."""


class InputError(DefectkitError):
    """A single input file is unusable; batch jobs report it and go on with the others."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TaxonomyError(DefectkitError):
    """The taxonomy file is malformed, or a label cannot be mapped onto it."""

"""Errors the domain services raise for input a user can fix."""
from __future__ import annotations


class ValidationFailed(Exception):
    """Input was refused; ``errors`` maps a field name (or "" for the whole) to messages.

    Messages are lazy gettext strings, so they render in the user's language.
    """

    def __init__(self, errors: dict[str, list], code: str = "validation_failed"):
        super().__init__(errors)
        self.errors = errors
        # The machine-readable reason the API answers with (e.g. "insufficient_points").
        self.code = code

    @classmethod
    def one(cls, field: str, message, code: str = "validation_failed") -> "ValidationFailed":
        return cls({field: [message]}, code)


class NotFound(Exception):
    """The named object does not exist in this tenant (rendered as 404)."""

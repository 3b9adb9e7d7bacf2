"""Errors the domain services raise for input a user can fix."""
from __future__ import annotations


class ValidationFailed(Exception):
    """Input was refused; ``errors`` maps a field name (or "" for the whole) to messages.

    Messages are lazy gettext strings, so they render in the user's language.
    """

    def __init__(self, errors: dict[str, list]):
        super().__init__(errors)
        self.errors = errors

    @classmethod
    def one(cls, field: str, message) -> "ValidationFailed":
        return cls({field: [message]})


class NotFound(Exception):
    """The named object does not exist in this tenant (rendered as 404)."""

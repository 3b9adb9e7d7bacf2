"""Loyalty administration: rewards catalogue, goodwill budget report, member statements."""
from __future__ import annotations

from saas.loyalty.web import bp  # noqa: F401

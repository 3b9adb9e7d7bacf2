"""Loyalty on the guest card: the panel, and the award, redeem, adjust, void and reverse dialogs."""
from __future__ import annotations

from saas.loyalty.web import bp  # noqa: F401

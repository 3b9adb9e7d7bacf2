"""The loyalty blueprint: the guest card's loyalty panel and dialogs (card_views), the
rewards catalogue, goodwill report and member statements (admin_views)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("loyalty", __name__)

from saas.loyalty import admin_views, card_views, services  # noqa: E402,F401  (views on bp; daily jobs)

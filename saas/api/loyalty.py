"""Loyalty endpoints of the JSON API (redemptions, reversals, a customer's loyalty)."""
from __future__ import annotations

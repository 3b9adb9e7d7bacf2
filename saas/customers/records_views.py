"""Merging duplicate customers, reassigning a departed staff member's customers, and the
privacy requests (export one customer's data, erase it)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("records", __name__)

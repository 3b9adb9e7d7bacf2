"""Importing customers and transactions from CSV/XLSX, and exporting them."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("imports", __name__)

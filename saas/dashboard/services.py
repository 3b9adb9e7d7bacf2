"""Figures for the dashboard's first screen."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from saas.auth.models import Membership
from saas.customers.models import Customer, Transaction
from saas.settings.models import Department, Location


@dataclass(frozen=True)
class Overview:
    customers: int
    transactions_this_month: int
    revenue_this_month: Decimal
    revenue_last_month: Decimal
    active_staff: int
    locations: int
    departments: int
    month_start: dt.date


def _month_start(d: dt.date) -> dt.date:
    return d.replace(day=1)


def overview(s: Session, as_of: dt.date) -> Overview:
    """Counts and month-to-date revenue of the bound tenant as of a day (inclusive)."""
    start = _month_start(as_of)
    prev_start = _month_start(start - dt.timedelta(days=1))
    # "same days last month": the 1st up to the same day number, within that month
    prev_end = min(prev_start + dt.timedelta(days=as_of.day - 1), start - dt.timedelta(days=1))

    def revenue(a: dt.date, b: dt.date) -> tuple[int, Decimal]:
        n, total = s.execute(select(func.count(Transaction.id), func.coalesce(func.sum(Transaction.amount), 0))
                             .where(Transaction.occurred_on >= a, Transaction.occurred_on <= b)).one()
        return n, Decimal(total)

    n, this_month = revenue(start, as_of)
    _n, last_month = revenue(prev_start, prev_end)
    count = lambda model, *where: s.scalar(select(func.count()).select_from(model).where(*where))  # noqa: E731
    return Overview(
        customers=count(Customer),
        transactions_this_month=n,
        revenue_this_month=this_month.quantize(Decimal("0.01")),
        revenue_last_month=last_month.quantize(Decimal("0.01")),
        active_staff=count(Membership, Membership.active.is_(True)),
        locations=count(Location, Location.active.is_(True)),
        departments=count(Department, Department.active.is_(True)),
        month_start=start,
    )

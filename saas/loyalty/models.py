"""The loyalty ledger (积分账本): accounts, append-only entries, lot allocations, rewards.

How the books work (see saas/loyalty/ledger.py for the rules that write them):

- Every change of a customer's points is one ``LedgerEntry`` (earn, redeem, expire,
  adjust, reverse, void), never updated or deleted: the database refuses UPDATE and
  DELETE on ``loyalty_entries`` and ``loyalty_allocations`` with triggers (migration 0005).
- A credit that brings new points (earn, a positive adjust) is a *lot* with its own
  ``available_on`` (end of the pending period) and ``expires_on`` (first day it is gone).
- A debit (redeem, expire, reverse, negative adjust) takes points out of lots, soonest
  expiring first; each take is a ``LotAllocation`` (debit entry -> lot, points > 0). A void
  puts back exactly what its redemption took (allocations with negative points).
- When a debit finds no lots left (a refund after the points were spent), the rest is
  *debt*: the balance goes negative and the next credits pay it first (allocations from
  the new lot to the debit entry).
- balance = sum(entry points) = sum(lot remainders) - debt; ``LoyaltyAccount.balance``
  caches it (``flask loyalty verify`` proves the cache) and its row is what concurrent
  writers lock.
"""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from saas.clock import now_utc
from saas.db import Base, TenantScoped, UTCDateTime

ENTRY_KINDS = ("earn", "redeem", "expire", "adjust", "reverse", "void")
LOT_KINDS = ("earn", "adjust")  # credits of these kinds (points > 0) are lots


class LoyaltyAccount(TenantScoped, Base):
    """A customer's place in the programme: cached balance and current tier."""

    __tablename__ = "loyalty_accounts"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    balance: Mapped[int] = mapped_column(Integer, default=0)
    tier_code: Mapped[str] = mapped_column(String(40), default="")
    tier_since: Mapped[dt.date | None] = mapped_column(Date)
    # The day the tier is next reviewed (kept or lowered by one level).
    tier_review_on: Mapped[dt.date | None] = mapped_column(Date)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (
        UniqueConstraint("tenant_id", "customer_id"),
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        Index("ix_loyalty_accounts_tenant_review", "tenant_id", "tier_review_on"),
    )


class LedgerEntry(TenantScoped, Base):
    """One append-only change of a customer's points."""

    __tablename__ = "loyalty_entries"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(12))
    points: Mapped[int] = mapped_column(Integer)
    occurred_on: Mapped[dt.date] = mapped_column(Date)
    # Lots only: redeemable from this day; gone from this day (None: never expires).
    available_on: Mapped[dt.date | None] = mapped_column(Date)
    expires_on: Mapped[dt.date | None] = mapped_column(Date)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reward_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The entry a reverse or void undoes.
    reverses_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    staff_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(255), default="")
    # Service-recovery goodwill counts against the staff member's monthly budget.
    goodwill: Mapped[bool] = mapped_column(Boolean, default=False)
    # Points used as payment: what they were worth.
    cash_value: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    idempotency_key: Mapped[str | None] = mapped_column(String(160))
    # How an earning was computed (base, multipliers, bonuses), for the statement.
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "transaction_id"], ["transactions.tenant_id", "transactions.id"]),
        ForeignKeyConstraint(["tenant_id", "reward_id"], ["rewards.tenant_id", "rewards.id"]),
        ForeignKeyConstraint(["tenant_id", "reverses_id"], ["loyalty_entries.tenant_id", "loyalty_entries.id"]),
        Index("ix_loyalty_entries_tenant_customer", "tenant_id", "customer_id", "occurred_on"),
        Index("ix_loyalty_entries_tenant_transaction", "tenant_id", "transaction_id"),
        Index("ix_loyalty_entries_tenant_reverses", "tenant_id", "reverses_id"),
        Index("ix_loyalty_entries_tenant_lots", "tenant_id", "expires_on"),
    )


class TierChange(TenantScoped, Base):
    """One change of a customer's tier, with the state before and after (code, since, review
    day): an ``upgrade`` (a threshold met), a ``review`` (the tier kept, with the next review
    day, or lowered), an ``undo`` of an upgrade that a reversed transaction had carried
    (``undoes_id``; the transaction in ``transaction_id``), or a ``merge`` (the higher tier
    of a record merged into the customer taken over). Append-only, like the ledger."""

    __tablename__ = "loyalty_tier_changes"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(12))
    changed_on: Mapped[dt.date] = mapped_column(Date)
    from_code: Mapped[str] = mapped_column(String(40), default="")
    from_since: Mapped[dt.date | None] = mapped_column(Date)
    from_review_on: Mapped[dt.date | None] = mapped_column(Date)
    to_code: Mapped[str] = mapped_column(String(40), default="")
    to_since: Mapped[dt.date | None] = mapped_column(Date)
    to_review_on: Mapped[dt.date | None] = mapped_column(Date)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    undoes_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "transaction_id"], ["transactions.tenant_id", "transactions.id"]),
        ForeignKeyConstraint(["tenant_id", "undoes_id"], ["loyalty_tier_changes.tenant_id", "loyalty_tier_changes.id"]),
        Index("ix_loyalty_tier_changes_tenant_customer", "tenant_id", "customer_id"),
    )


class LotAllocation(TenantScoped, Base):
    """Points a debit took from a lot (> 0), or a void gave back to it (< 0)."""

    __tablename__ = "loyalty_allocations"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    entry_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    lot_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    points: Mapped[int] = mapped_column(Integer)
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "entry_id"], ["loyalty_entries.tenant_id", "loyalty_entries.id"]),
        ForeignKeyConstraint(["tenant_id", "lot_id"], ["loyalty_entries.tenant_id", "loyalty_entries.id"]),
        Index("ix_loyalty_allocations_tenant_customer", "tenant_id", "customer_id"),
        Index("ix_loyalty_allocations_tenant_entry", "tenant_id", "entry_id"),
        Index("ix_loyalty_allocations_tenant_lot", "tenant_id", "lot_id"),
    )


class Reward(TenantScoped, Base):
    """An item of the rewards catalogue (礼品/权益兑换)."""

    __tablename__ = "rewards"
    code: Mapped[str] = mapped_column(String(40))
    name_zh: Mapped[str] = mapped_column(String(120))
    name_en: Mapped[str] = mapped_column(String(120))
    points_cost: Mapped[int] = mapped_column(Integer)
    # None: unlimited. Decremented under the customer's lock by each redemption.
    stock: Mapped[int | None] = mapped_column(Integer)
    active_from: Mapped[dt.date | None] = mapped_column(Date)
    active_until: Mapped[dt.date | None] = mapped_column(Date)
    # Location codes where it can be redeemed; empty: everywhere.
    location_codes: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)

    def name_for(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en


class Referral(TenantScoped, Base):
    """Who brought a customer: both may be rewarded on the new customer's first
    transaction (once: the reward entries carry idempotency keys)."""

    __tablename__ = "loyalty_referrals"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    referrer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    recorded_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (
        UniqueConstraint("tenant_id", "customer_id"),
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "referrer_id"], ["customers.tenant_id", "customers.id"]),
    )

"""Customers and their transactions (the archive issue extends these)."""
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
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from saas.clock import now_utc
from saas.db import Base, TenantScoped, UTCDateTime


class Customer(TenantScoped, Base):
    """A person or company the tenant serves (客户)."""

    __tablename__ = "customers"
    name: Mapped[str] = mapped_column(String(120))
    # What staff should say when greeting: "王先生", "Mr. Wang".
    address_as: Mapped[str] = mapped_column(String(60), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    external_ref: Mapped[str | None] = mapped_column(String(64))
    card_number: Mapped[str | None] = mapped_column(String(40))
    phone_alt: Mapped[str] = mapped_column(String(32), default="")
    plate_number: Mapped[str] = mapped_column(String(20), default="")
    classification: Mapped[str] = mapped_column(String(12), default="general")
    notes: Mapped[str] = mapped_column(Text, default="")
    location_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The staff member who owns the relationship (客户经理).
    owner_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    gender: Mapped[str] = mapped_column(String(10), default="")
    # Business customers.
    company: Mapped[str] = mapped_column(String(120), default="")
    job_title: Mapped[str] = mapped_column(String(60), default="")
    company_industry: Mapped[str] = mapped_column(String(60), default="")
    company_size: Mapped[str] = mapped_column(String(20), default="")
    consent_phone: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_email: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    # Set when this customer was merged into another; its history moved there.
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Set when personal data was erased (PIPL/GDPR); transactions stay for the books.
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_ref"),
        UniqueConstraint("tenant_id", "card_number"),
        ForeignKeyConstraint(["tenant_id", "location_id"], ["locations.tenant_id", "locations.id"]),
        ForeignKeyConstraint(["tenant_id", "merged_into_id"], ["customers.tenant_id", "customers.id"]),
        # Covering index for the search by any part of the phone numbers: a scan of this
        # narrow index instead of the table (and the seek on phone for exact numbers).
        Index("ix_customers_tenant_phones", "tenant_id", "phone", "phone_alt", "id"),
        Index("ix_customers_tenant_name", "tenant_id", "name"),
        # The customers merged into one (a tier counts their points earned; migration 0008).
        Index("ix_customers_tenant_merged_into", "tenant_id", "merged_into_id", "id",
              sqlite_where=text("merged_into_id IS NOT NULL"), postgresql_where=text("merged_into_id IS NOT NULL")),
        # The search by the start of the name compares lower(name), and lists customers in
        # the order of this index (lower(name), name, id): a page is read in index order and
        # a count of the matches never touches the table (merged_into_id is here too).
        Index("ix_customers_tenant_lower_name", "tenant_id", text("lower(name)"), "name", "id", "merged_into_id"),
        # The search by the start of the other number (+44..., a trunk prefix 021...).
        Index("ix_customers_tenant_phone_alt", "tenant_id", "phone_alt"),
        # Any part of the phone numbers on PostgreSQL: trigram indexes (pg_trgm, migration
        # 0004); SQLite has the FTS5 trigram table customer_phone_search instead.
        Index("ix_customers_phone_trgm", "phone", postgresql_using="gin",
              postgresql_ops={"phone": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
        Index("ix_customers_phone_alt_trgm", "phone_alt", postgresql_using="gin",
              postgresql_ops={"phone_alt": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
        # The search by email compares lower(email).
        Index("ix_customers_tenant_email", "tenant_id", "email"),
        Index("ix_customers_tenant_lower_email", "tenant_id", text("lower(email)")),
        Index("ix_customers_tenant_plate", "tenant_id", "plate_number"),
        Index("ix_customers_tenant_owner", "tenant_id", "owner_user_id"),
    )


class CustomerContact(TenantScoped, Base):
    """A key decision maker of a company customer (name, role, phone)."""

    __tablename__ = "customer_contacts"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(60), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        Index("ix_customer_contacts_tenant_customer", "tenant_id", "customer_id"),
    )


class Preference(TenantScoped, Base):
    """What a customer likes (客户偏好), recorded anywhere, visible at every location."""

    __tablename__ = "preferences"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    category: Mapped[str] = mapped_column(String(20))  # room, food, product, communication, other
    key: Mapped[str] = mapped_column(String(60))
    value: Mapped[str] = mapped_column(String(255))
    recorded_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    location_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "location_id"], ["locations.tenant_id", "locations.id"]),
        Index("ix_preferences_tenant_customer", "tenant_id", "customer_id"),
    )


class ContactLog(TenantScoped, Base):
    """A call, visit, message or email with a customer, with outcome and next step."""

    __tablename__ = "contact_logs"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    channel: Mapped[str] = mapped_column(String(12))  # call, visit, message, email
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(500), default="")
    next_step: Mapped[str] = mapped_column(String(255), default="")
    staff_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    location_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "location_id"], ["locations.tenant_id", "locations.id"]),
        Index("ix_contact_logs_tenant_customer", "tenant_id", "customer_id", "occurred_at"),
    )


class AuditEntry(TenantScoped, Base):
    """Who did what to which record: merges, exports and erasures of personal data."""

    __tablename__ = "audit_log"
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (Index("ix_audit_log_tenant_object", "tenant_id", "object_type", "object_id"),)


class ImportJob(TenantScoped, Base):
    """One upload of customers or transactions: its file, mapping, progress and errors."""

    __tablename__ = "import_jobs"
    kind: Mapped[str] = mapped_column(String(20))  # customers, transactions
    filename: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    options: Mapped[dict] = mapped_column(JSON, default=dict)  # mapping, dedupe column, skip failing
    status: Mapped[str] = mapped_column(String(12), default="uploaded")  # uploaded, running, done, failed
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_rows: Mapped[int] = mapped_column(Integer, default=0)
    updated_rows: Mapped[int] = mapped_column(Integer, default=0)
    skipped_rows: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list] = mapped_column(JSON, default=list)  # [{row, column, message}]
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ImportMapping(TenantScoped, Base):
    """The column mapping a tenant last used for an import kind (remembered)."""

    __tablename__ = "import_mappings"
    kind: Mapped[str] = mapped_column(String(20))
    mapping: Mapped[dict] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("tenant_id", "kind"),)


class IdempotencyRecord(TenantScoped, Base):
    """The first answer to an API request with an Idempotency-Key, replayed on retries."""

    __tablename__ = "idempotency_records"
    key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)


class Transaction(TenantScoped, Base):
    """A stay, purchase, service visit, deposit ... (消费/交易记录)."""

    __tablename__ = "transactions"
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    location_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    department_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    staff_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    occurred_on: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    external_id: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    # A refunded or cancelled transaction: its points were reversed on that day.
    reversed_on: Mapped[dt.date | None] = mapped_column(Date)
    reversed_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    reverse_reason: Mapped[str] = mapped_column(String(255), server_default="")
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id"),
        ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
        ForeignKeyConstraint(["tenant_id", "kind_id"], ["transaction_kinds.tenant_id", "transaction_kinds.id"]),
        ForeignKeyConstraint(["tenant_id", "location_id"], ["locations.tenant_id", "locations.id"]),
        ForeignKeyConstraint(["tenant_id", "department_id"], ["departments.tenant_id", "departments.id"]),
        Index("ix_transactions_tenant_customer_date", "tenant_id", "customer_id", "occurred_on"),
    )

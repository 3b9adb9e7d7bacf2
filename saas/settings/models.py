"""A tenant's own lists and keys: locations, departments, transaction kinds, API keys,
and the programme sections loaded from its industry preset."""
from __future__ import annotations

import datetime as dt
import re
import uuid

from flask_babel import lazy_gettext as _l
from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from saas.clock import now_utc
from saas.db import Base, TenantScoped, UTCDateTime


# The code of a list entry, a reward, a tier or a promotion: what the API and the
# programme's TOML name it by.
CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
CODE_RULE = _l("Use 1 to 40 lower-case letters, digits and hyphens, starting with a letter or digit.")


class CodedEntry:
    """An entry of an editable list: a stable code and names in both languages."""

    code: Mapped[str] = mapped_column(String(40))
    name_zh: Mapped[str] = mapped_column(String(120))
    name_en: Mapped[str] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    def name_for(self, locale: str) -> str:
        return self.name_zh if str(locale).startswith("zh") else self.name_en


class Location(CodedEntry, TenantScoped, Base):
    """A hotel property, showroom, branch or estate (门店/分公司)."""

    __tablename__ = "locations"
    address: Mapped[str] = mapped_column(String(255), default="")
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)


class Department(CodedEntry, TenantScoped, Base):
    """Sales, after-sales, front office, ... (部门)."""

    __tablename__ = "departments"
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)


class TransactionKind(CodedEntry, TenantScoped, Base):
    """A kind of transaction the tenant records (stay, repair order, deposit, ...)."""

    __tablename__ = "transaction_kinds"
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)


class ApiKey(TenantScoped, Base):
    """A key another system uses for the JSON API; only its hash is stored."""

    __tablename__ = "api_keys"
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (UniqueConstraint("tenant_id", "key_hash"),)


class ProgrammeSection(TenantScoped, Base):
    """One section of the tenant's programme set-up (tiers, earning, churn, surveys,
    targets) as loaded from its preset and edited in Settings. The loyalty, retention,
    survey and target domains read their configuration from here."""

    __tablename__ = "programme_sections"
    section: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (UniqueConstraint("tenant_id", "section"),)

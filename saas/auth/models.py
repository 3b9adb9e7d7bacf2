"""Tenants, users and memberships: who may act for which business."""
from __future__ import annotations

import datetime as dt
import enum
import uuid

from flask_login import UserMixin
from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from saas.clock import now_utc
from saas.db import Base, TenantScoped, UTCDateTime, new_id


class Role(str, enum.Enum):
    """Roles, weakest first; each role may do everything the roles before it may."""

    staff = "staff"
    manager = "manager"
    owner = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


INDUSTRIES = ("hotel", "dealership", "property", "bank", "other")


class Tenant(Base):
    """A business using Huitou (global table)."""

    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    industry: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(10), default="zh_CN")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    # ISO 3166 country for reading phone numbers typed without a country code.
    country: Mapped[str] = mapped_column(String(2), default="CN")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)


class User(UserMixin, Base):
    """A person who logs in (global table: one email, one password, many tenants)."""

    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    # None: follow the tenant's language.
    language: Mapped[str | None] = mapped_column(String(10))
    # flask-login's alternative token: changed at logout and password change, which
    # invalidates every session and remember cookie issued before.
    session_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)

    def get_id(self) -> str:
        return self.session_token


class Membership(TenantScoped, Base):
    """A user's place in one tenant, with a role."""

    __tablename__ = "memberships"
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(10))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    __table_args__ = (UniqueConstraint("tenant_id", "user_id"),)

    @property
    def role_enum(self) -> Role:
        return Role(self.role)


class Invitation(TenantScoped, Base):
    """A one-time link that makes its holder a member with a role."""

    __tablename__ = "invitations"
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(10))
    invited_by_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=now_utc)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

"""Sign-up, authentication, memberships, invitations and passwords."""
from __future__ import annotations

import datetime as dt
import re
import secrets
import unicodedata
import uuid

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from saas.auth.models import INDUSTRIES, Invitation, Membership, Role, Tenant, User
from saas.clock import now_utc
from saas.db import bind_tenant, bind_user, bound_tenant_id
from saas.errors import NotFound, ValidationFailed
from saas.settings import services as settings_services

MIN_PASSWORD = 10
# A short list of the passwords most often tried; a long password defeats the rest.
COMMON_PASSWORDS = frozenset({
    "1234567890", "12345678910", "qwertyuiop", "password123", "password12", "1q2w3e4r5t",
    "iloveyou12", "abc1234567", "0987654321", "1111111111", "aaaaaaaaaa", "qwerty1234",
    "passw0rd12", "woaini1314", "a123456789", "1234qwer!@", "huitou1234",
})


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def password_problems(password: str, email: str = "") -> list:
    """Why a new password is refused (ASVS 2.1: length, not common, not the email)."""
    problems = []
    if len(password or "") < MIN_PASSWORD:
        problems.append(_l("Use at least %(n)s characters.", n=MIN_PASSWORD))
    elif len(password) > 128:
        problems.append(_l("Use at most %(n)s characters.", n=128))
    elif password.lower() in COMMON_PASSWORDS or len(set(password)) < 4:
        problems.append(_l("This password is too easy to guess."))
    elif email and password.lower() == normalise_email(email):
        problems.append(_l("The password cannot be your email address."))
    return problems


# werkzeug's default (scrypt). The test suite swaps in a cheap method to save time.
HASH_METHOD = "scrypt"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=HASH_METHOD)


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def make_slug(s: Session, name: str) -> str:
    """A unique, URL-safe slug for a tenant name (ASCII; Chinese names fall back to 't')."""
    base = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:40] or "t"
    slug = base
    while s.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def find_user(s: Session, email: str) -> User | None:
    return s.scalar(select(User).where(User.email == normalise_email(email)))


def create_tenant(s: Session, *, name: str, industry: str, owner_name: str, owner_email: str,
                  password: str, language: str | None = None, timezone: str | None = None,
                  currency: str | None = None) -> tuple[Tenant, User]:
    """Create a tenant configured from its industry preset, with its owner.

    The owner is a new user, or an existing one when the email is known and the
    password matches it (one person may run several businesses). Binds the session to
    the new tenant. Raises ValidationFailed for a bad industry, email or password.
    """
    errors: dict[str, list] = {}
    if industry not in INDUSTRIES:
        errors["industry"] = [_l("Choose one of the listed industries.")]
    if not (name or "").strip():
        errors["business_name"] = [_l("This field is required.")]
    user = find_user(s, owner_email)
    if user is not None and not check_password_hash(user.password_hash, password or ""):
        errors["email"] = [_l("This email already has an account. Log in, or use another email.")]
    elif user is None:
        problems = password_problems(password, owner_email)
        if problems:
            errors["password"] = problems
    if errors:
        raise ValidationFailed(errors)
    preset = settings_services.presets.load_preset(industry).get("tenant", {})
    tenant = Tenant(
        slug=make_slug(s, name), name=name.strip(), industry=industry,
        language=language or preset.get("language", "zh_CN"),
        timezone=timezone or preset.get("timezone", "Asia/Shanghai"),
        currency=currency or preset.get("currency", "CNY"),
    )
    s.add(tenant)
    if user is None:
        user = User(email=normalise_email(owner_email), name=owner_name.strip(),
                    password_hash=hash_password(password), session_token=new_session_token())
        s.add(user)
    s.flush()
    bind_tenant(s, tenant.id, user.id)
    s.add(Membership(user_id=user.id, role=Role.owner.value))
    settings_services.apply_preset(s, tenant)
    s.flush()
    return tenant, user


def authenticate(s: Session, email: str, password: str) -> User | None:
    """The user with this email and password who may log in somewhere, or None.

    A user whose every membership is deactivated cannot log in. The password is checked
    even for an unknown email so both take the same time.
    """
    user = find_user(s, email)
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not check_password_hash(user.password_hash, password or ""):
        return None
    if not active_memberships(s, user.id):
        return None
    return user


_DUMMY_HASH = generate_password_hash("not-a-real-password")


def active_memberships(s: Session, user_id: uuid.UUID) -> list[tuple[Membership, Tenant]]:
    """The user's active memberships across tenants (read before any tenant is bound)."""
    bind_user(s, user_id)
    q = (select(Membership, Tenant).join(Tenant, Tenant.id == Membership.tenant_id)
         .where(Membership.user_id == user_id, Membership.active.is_(True))
         .order_by(Tenant.name)
         .execution_options(all_tenants=True))
    return [tuple(r) for r in s.execute(q)]


def membership_for(s: Session, user_id: uuid.UUID, tenant_id: uuid.UUID) -> Membership | None:
    """The user's active membership in the tenant, if any."""
    bind_user(s, user_id)
    q = (select(Membership).where(Membership.user_id == user_id, Membership.tenant_id == tenant_id,
                                  Membership.active.is_(True))
         .execution_options(all_tenants=True))
    return s.scalar(q)


def rotate_session_token(s: Session, user: User) -> None:
    """Invalidate every session and remember cookie of the user."""
    user.session_token = new_session_token()
    s.flush()


def change_password(s: Session, user: User, current: str, new: str) -> None:
    errors: dict[str, list] = {}
    if not check_password_hash(user.password_hash, current or ""):
        errors["current_password"] = [_l("This is not your current password.")]
    problems = password_problems(new, user.email)
    if problems:
        errors["new_password"] = problems
    if errors:
        raise ValidationFailed(errors)
    set_password(s, user, new)


def set_password(s: Session, user: User, new: str) -> None:
    """Set a new password and end every other session of the user."""
    problems = password_problems(new, user.email)
    if problems:
        raise ValidationFailed({"password": problems})
    user.password_hash = hash_password(new)
    rotate_session_token(s, user)


def password_fingerprint(user: User) -> str:
    """Part of a reset token: it stops matching once the password changes (one-time use)."""
    return user.password_hash[-16:]


# --- staff and invitations ---------------------------------------------------------------

def list_members(s: Session) -> list[tuple[Membership, User]]:
    q = (select(Membership, User).join(User, User.id == Membership.user_id)
         .order_by(Membership.active.desc(), User.name))
    return [tuple(r) for r in s.execute(q)]


def get_membership(s: Session, membership_id: uuid.UUID) -> Membership:
    m = s.get(Membership, (bound_tenant_id(s), membership_id))
    if m is None:
        raise NotFound("membership")
    return m


def set_member_active(s: Session, membership: Membership, active: bool, acting_user_id: uuid.UUID) -> None:
    """Deactivate or reactivate a member. The acting owner cannot deactivate themself,
    and a tenant always keeps one active owner."""
    if not active:
        if membership.user_id == acting_user_id:
            raise ValidationFailed.one("", _l("You cannot deactivate yourself."))
        if membership.role == Role.owner.value:
            owners = s.scalar(select(func.count()).select_from(Membership).where(
                Membership.role == Role.owner.value, Membership.active.is_(True)))
            if owners <= 1:
                raise ValidationFailed.one("", _l("A business needs at least one active owner."))
    membership.active = active
    if not active:
        user = s.get(User, membership.user_id)
        rotate_session_token(s, user)
    s.flush()


def set_member_role(s: Session, membership: Membership, role: str, acting_user_id: uuid.UUID) -> None:
    if role not in {r.value for r in Role}:
        raise ValidationFailed.one("role", _l("Choose one of the listed roles."))
    if membership.user_id == acting_user_id and role != membership.role:
        raise ValidationFailed.one("role", _l("You cannot change your own role."))
    membership.role = role
    s.flush()


def create_invitation(s: Session, email: str, role: str, invited_by: User, max_age_days: int) -> Invitation:
    """Invite someone by email with a role; raises ValidationFailed for a bad role or a
    person who is already a member."""
    email = normalise_email(email)
    if role not in {r.value for r in Role}:
        raise ValidationFailed.one("role", _l("Choose one of the listed roles."))
    existing = find_user(s, email)
    if existing is not None and s.scalar(select(Membership).where(Membership.user_id == existing.id)):
        raise ValidationFailed.one("email", _l("This person is already a member of your business."))
    inv = Invitation(email=email, role=role, invited_by_id=invited_by.id,
                     expires_at=now_utc() + dt.timedelta(days=max_age_days))
    s.add(inv)
    s.flush()
    return inv


def list_invitations(s: Session) -> list[Invitation]:
    return list(s.scalars(select(Invitation).where(Invitation.accepted_at.is_(None),
                                                    Invitation.revoked_at.is_(None))
                          .order_by(Invitation.created_at.desc())))


def get_invitation(s: Session, invitation_id: uuid.UUID) -> Invitation:
    inv = s.get(Invitation, (bound_tenant_id(s), invitation_id))
    if inv is None:
        raise NotFound("invitation")
    return inv


def revoke_invitation(s: Session, inv: Invitation) -> None:
    if inv.revoked_at is None:
        inv.revoked_at = now_utc()
    s.flush()


def open_invitation(s: Session, tenant_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation | None:
    """Bind the session to the invitation's tenant and return it when it can still be used."""
    bind_tenant(s, tenant_id)
    inv = s.get(Invitation, (tenant_id, invitation_id))
    if inv is None or inv.accepted_at or inv.revoked_at or inv.expires_at < now_utc():
        return None
    return inv


def accept_invitation(s: Session, inv: Invitation, name: str, password: str) -> User:
    """Make the invitee a member. A new email creates the user with ``password``; a known
    one must give its existing password. The invitation cannot be used again."""
    user = find_user(s, inv.email)
    if user is None:
        errors: dict[str, list] = {}
        if not (name or "").strip():
            errors["name"] = [_l("This field is required.")]
        problems = password_problems(password, inv.email)
        if problems:
            errors["password"] = problems
        if errors:
            raise ValidationFailed(errors)
        user = User(email=inv.email, name=name.strip(), password_hash=hash_password(password),
                    session_token=new_session_token())
        s.add(user)
        s.flush()
    elif not check_password_hash(user.password_hash, password or ""):
        raise ValidationFailed.one("password", _l("This email already has an account: enter its password."))
    bind_tenant(s, inv.tenant_id, user.id)
    membership = s.scalar(select(Membership).where(Membership.user_id == user.id))
    if membership is None:
        s.add(Membership(user_id=user.id, role=inv.role))
    else:
        membership.role, membership.active = inv.role, True
    inv.accepted_at = now_utc()
    s.flush()
    return user

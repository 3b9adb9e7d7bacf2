"""Tenant settings: preset loading, editable lists, programme sections and API keys."""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import secrets
import tomllib
import uuid
import zoneinfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from saas import LANGUAGES
from saas.auth.models import Tenant
from saas.clock import now_utc
from saas.db import bound_tenant_id
from saas.errors import NotFound, ValidationFailed
from saas.loyalty.models import Reward
from saas.settings import presets
from saas.settings.models import (  # noqa: F401 - CODE_RE: services.CODE_RE for the API's schema
    CODE_RE,
    CODE_RULE,
    ApiKey,
    Department,
    Location,
    ProgrammeSection,
    TransactionKind,
)

LIST_MODELS = {"locations": Location, "departments": Department, "transaction-kinds": TransactionKind}


def apply_preset(s: Session, tenant: Tenant) -> None:
    """Give the bound tenant the lists and programme sections of its industry preset."""
    preset = presets.load_preset(tenant.industry)
    for model, key in ((Department, "departments"), (Location, "locations"), (TransactionKind, "transaction_kinds")):
        for pos, entry in enumerate(preset.get(key, [])):
            obj = model(code=entry["code"], name_zh=entry["name_zh"], name_en=entry["name_en"], position=pos)
            if model is TransactionKind:
                obj.is_default = bool(entry.get("default", False))
            s.add(obj)
    for section in presets.PROGRAMME_SECTIONS:
        if section in preset:
            s.add(ProgrammeSection(section=section, data=preset[section]))
    for entry in preset.get("rewards", []):
        s.add(Reward(code=entry["code"], name_zh=entry["name_zh"], name_en=entry["name_en"],
                     points_cost=entry["points_cost"], stock=entry.get("stock"), location_codes=[]))
    s.flush()


# --- editable lists: locations, departments, transaction kinds ---------------------------

def list_entries(s: Session, kind: str, include_inactive: bool = True) -> list:
    model = LIST_MODELS[kind]
    q = select(model).order_by(model.position, model.code)
    if not include_inactive:
        q = q.where(model.active.is_(True))
    return list(s.scalars(q))


def get_entry(s: Session, kind: str, entry_id: uuid.UUID):
    """The entry of the bound tenant with this id; NotFound otherwise."""
    model = LIST_MODELS[kind]
    obj = s.get(model, (bound_tenant_id(s), entry_id))
    if obj is None:
        raise NotFound(kind)
    return obj


def get_entry_by_code(s: Session, kind: str, code: str):
    model = LIST_MODELS[kind]
    obj = s.scalar(select(model).where(model.code == code))
    if obj is None:
        raise NotFound(kind)
    return obj


def _check_entry(s: Session, kind: str, data: dict, existing=None) -> dict:
    errors: dict[str, list] = {}
    code = (data.get("code") or "").strip()
    if not CODE_RE.match(code):
        errors.setdefault("code", []).append(CODE_RULE)
    else:
        model = LIST_MODELS[kind]
        clash = s.scalar(select(model).where(model.code == code))
        if clash is not None and clash is not existing:
            errors.setdefault("code", []).append(_l("This code is already used."))
    for key in ("name_zh", "name_en"):
        v = (data.get(key) or "").strip()
        if not v:
            errors.setdefault(key, []).append(_l("This field is required."))
        elif len(v) > 120:
            errors.setdefault(key, []).append(_l("At most %(n)s characters.", n=120))
    if kind == "locations" and len(data.get("address") or "") > 255:
        errors.setdefault("address", []).append(_l("At most %(n)s characters.", n=255))
    if errors:
        raise ValidationFailed(errors)
    clean = {"code": code, "name_zh": data["name_zh"].strip(), "name_en": data["name_en"].strip(),
             "active": bool(data.get("active", True))}
    if kind == "locations":
        clean["address"] = (data.get("address") or "").strip()
    if kind == "transaction-kinds":
        clean["is_default"] = bool(data.get("is_default", False))
    return clean


def save_entry(s: Session, kind: str, data: dict, existing=None):
    """Create or update an entry of a list; raises ValidationFailed with per-field messages.

    A transaction kind made default takes the default from the previous one; the last
    default kind can be neither deactivated nor undefaulted (every tenant has one).
    """
    clean = _check_entry(s, kind, data, existing)
    model = LIST_MODELS[kind]
    if kind == "transaction-kinds":
        was_default = existing is not None and existing.is_default
        if was_default and (not clean["is_default"] or not clean["active"]):
            raise ValidationFailed.one("is_default", _l("Make another kind the default first."))
        if clean["is_default"] and not clean["active"]:
            raise ValidationFailed.one("active", _l("The default kind must be active."))
    obj = existing
    if obj is None:
        pos = s.scalar(select(func.coalesce(func.max(model.position), -1))) + 1
        obj = model(position=pos)
        s.add(obj)
    for k, v in clean.items():
        setattr(obj, k, v)
    s.flush()
    if kind == "transaction-kinds" and obj.is_default:
        s.execute(update(TransactionKind).where(TransactionKind.id != obj.id).values(is_default=False))
        s.flush()
    return obj


def replace_entries(s: Session, kind: str, items: list[dict]) -> list:
    """Make the list match ``items`` by code (the API's PUT): create or update each item,
    deactivate entries not named (they stay for history). All or nothing."""
    errors: dict[str, list] = {}
    seen = set()
    for i, item in enumerate(items):
        code = item.get("code")
        if code in seen:
            errors.setdefault(f"{i}.code", []).append(_l("This code is already used."))
        seen.add(code)
    if errors:
        raise ValidationFailed(errors)
    model = LIST_MODELS[kind]
    current = {e.code: e for e in s.scalars(select(model))}
    with s.begin_nested():
        for i, item in enumerate(items):
            try:
                save_entry(s, kind, {**item, "active": item.get("active", True)}, current.get(item.get("code")))
            except ValidationFailed as exc:
                for field, msgs in exc.errors.items():
                    errors.setdefault(f"{i}.{field}", []).extend(msgs)
        if errors:
            raise ValidationFailed(errors)
        for code, entry in current.items():
            if code not in seen:
                if getattr(entry, "is_default", False):
                    raise ValidationFailed.one("", _l("The default transaction kind cannot be removed."))
                entry.active = False
        s.flush()
    return list_entries(s, kind)


# --- programme sections ----------------------------------------------------------------

def programme_sections(s: Session) -> dict[str, dict | list]:
    return {p.section: p.data for p in s.scalars(select(ProgrammeSection).order_by(ProgrammeSection.section))}


def update_programme_section(s: Session, section: str, toml_text: str) -> ProgrammeSection:
    """Replace one section from TOML text (``[loyalty]`` table or ``[[surveys]]`` list).

    Raises ValidationFailed (field "text") with the parse error or the rule each value breaks.
    """
    if section not in presets.PROGRAMME_SECTIONS:
        raise NotFound(section)
    try:
        doc = tomllib.loads(toml_text or "")
    except tomllib.TOMLDecodeError as exc:
        raise ValidationFailed.one("text", _toml_error(exc)) from None
    except RecursionError:
        raise ValidationFailed.one("text", _l("The text is nested too deeply."))
    if set(doc) != {section}:
        raise ValidationFailed.one("text", _l("The text must hold exactly the section [%(s)s].", s=section))
    try:
        return update_programme_section_data(s, section, doc[section])
    except ValidationFailed as exc:
        # The whole-section problems belong to the text box of the TOML editor.
        raise ValidationFailed({k or "text": v for k, v in exc.errors.items()}, exc.code) from None


def _toml_error(exc: tomllib.TOMLDecodeError):
    """Where the TOML text stops parsing, in the user's language (tomllib's own words,
    English only, follow for the detail)."""
    text = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", text)
    if m:
        return _l("This is not valid TOML at line %(line)s, column %(column)s (%(err)s).", line=m.group(1),
                  column=m.group(2), err=text[:m.start()].strip())
    if "end of document" in text:
        return _l("This is not valid TOML: the text ends before the last setting is complete (%(err)s).", err=text)
    return _l("This is not valid TOML: %(err)s", err=text)


def programme_section_data(s: Session, section: str):
    """The bound tenant's saved section as stored (None when it has none)."""
    if section not in presets.PROGRAMME_SECTIONS:
        raise NotFound(section)
    return s.scalar(select(ProgrammeSection.data).where(ProgrammeSection.section == section))


def update_programme_section_data(s: Session, section: str, data) -> ProgrammeSection:
    """Replace one section with ``data`` (parsed TOML, or a form's values over the saved
    section) after checking it with ``presets.validate_section``.

    Raises ValidationFailed with the problems under the whole-form key "", saving nothing.
    """
    if section not in presets.PROGRAMME_SECTIONS:
        raise NotFound(section)
    # The section is stored as JSON: TOML dates and inf/nan have no JSON form (and
    # PostgreSQL refuses them), so they are refused here rather than failing on save.
    bad = _non_json_value(data)
    if bad is not None:
        raise ValidationFailed.one("", _l(
            "%(value)s cannot be stored here: write dates as text in quotes, and use finite numbers.",
            value=bad))
    codes = {d.code for d in s.scalars(select(Department))}
    kinds = {k.code for k in s.scalars(select(TransactionKind))}
    problems = presets.validate_section(section, data, codes, kinds)
    if problems:
        raise ValidationFailed({"": problems})
    row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == section))
    if row is None:
        row = ProgrammeSection(section=section, data=data)
        s.add(row)
    else:
        row.data = data
        row.updated_at = now_utc()
    s.flush()
    return row


def _non_json_value(value) -> str | None:
    """The first value in ``value`` that JSON cannot hold (a date/time, inf, nan), as text."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, (dt.date, dt.time)):
            return v.isoformat()
        elif isinstance(v, float) and not math.isfinite(v):
            return str(v)
    return None


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # matched whole: "^...$" let a key ending in a newline through
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value) -> str:
    """A value written inline (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_table(lines: list[str], path: list[str], table: dict, in_array: bool) -> None:
    """Write the plain keys of ``table``, then its sub-tables under their own headers.

    Inside an element of an array of tables, lists of tables (survey questions) are
    written as a multi-line array of inline tables, one per line, which reads better.
    """
    later = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, dict) and not in_array:
            later.append((key, value))
        elif _is_table_array(value) and not in_array:
            later.append((key, value))
        elif _is_table_array(value):
            lines.append(f"{_toml_key(key)} = [")
            lines.extend(f"  {_toml_value(v)}," for v in value)
            lines.append("]")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in later:
        sub = path + [_toml_key(key)]
        if isinstance(value, dict):
            lines.extend(["", f"[{'.'.join(sub)}]"])
            _toml_table(lines, sub, value, in_array=False)
        else:
            for item in value:
                lines.extend(["", f"[[{'.'.join(sub)}]]"])
                _toml_table(lines, sub, item, in_array=True)


def section_to_toml(section: str, data) -> str:
    """Write one programme section as TOML that ``update_programme_section`` reads back
    to the same data: ``[loyalty]`` with ``[[loyalty.tiers]]``, ``[churn]``,
    ``[[surveys]]`` with inline question tables, ``[[targets]]``."""
    lines: list[str] = []
    key = _toml_key(section)
    if isinstance(data, dict):
        lines.append(f"[{key}]")
        _toml_table(lines, [key], data, in_array=False)
    elif _is_table_array(data):
        for item in data:
            if lines:
                lines.append("")
            lines.append(f"[[{key}]]")
            _toml_table(lines, [key], item, in_array=True)
    else:
        lines.append(f"{key} = {_toml_value(data if data is not None else [])}")
    return "\n".join(lines) + "\n"


def programme_section_text(s: Session, section: str) -> str:
    """The bound tenant's section as TOML for editing (an empty section when it has none).

    Raises NotFound for a section name that is not part of the programme.
    """
    if section not in presets.PROGRAMME_SECTIONS:
        raise NotFound(section)
    row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == section))
    if row is None:
        return section_to_toml(section, [] if section in ("surveys", "targets") else {})
    return section_to_toml(section, row.data)


# --- tenant defaults -------------------------------------------------------------------

COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def update_tenant_defaults(s: Session, tenant: Tenant, name: str, language: str, timezone: str, currency: str,
                           country: str | None = None) -> None:
    """Change the tenant's name, default language, time zone, currency and country.

    The form offers only listed values; this checks again for other callers and raises
    ValidationFailed (fields business_name, language, timezone, currency), changing nothing.
    """
    errors: dict[str, list] = {}
    name = (name or "").strip()
    if not name:
        errors["business_name"] = [_l("This field is required.")]
    elif len(name) > 120:
        errors["business_name"] = [_l("At most %(n)s characters.", n=120)]
    elif any(c in name for c in "<>"):
        errors["business_name"] = [_l("Use plain text: the characters < and > are not allowed.")]
    if language not in LANGUAGES:
        errors["language"] = [_l("Choose one of the listed values.")]
    try:
        zoneinfo.ZoneInfo(timezone or "")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = [_l("Choose one of the listed values.")]
    if not CURRENCY_RE.match(currency or ""):
        errors["currency"] = [_l("Choose one of the listed values.")]
    if country is not None and not COUNTRY_RE.match(country):
        errors["country"] = [_l("Choose one of the listed values.")]
    if errors:
        raise ValidationFailed(errors)
    if country is not None:
        tenant.country = country
    tenant.name = name
    tenant.language = language
    tenant.timezone = timezone
    tenant.currency = currency
    s.flush()


# --- API keys ---------------------------------------------------------------------------

KEY_PREFIX = "htk"


def _hash_key(secret: str) -> str:
    # The secret has 256 bits of entropy, so a plain SHA-256 is enough (no stretching).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(s: Session, name: str, created_by_id: uuid.UUID | None) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the full key, which is shown once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise ValidationFailed.one("name", _l("Give the key a name of 1 to 80 characters."))
    tid = bound_tenant_id(s)
    secret = secrets.token_urlsafe(32)
    full = f"{KEY_PREFIX}_{tid.hex}_{secret}"
    key = ApiKey(name=name, prefix=secret[:6], key_hash=_hash_key(full), created_by_id=created_by_id)
    s.add(key)
    s.flush()
    return key, full


def tenant_of_key(full_key: str) -> uuid.UUID | None:
    """The tenant a presented key claims (checked by ``verify_api_key`` afterwards)."""
    parts = full_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    try:
        return uuid.UUID(hex=parts[1])
    except ValueError:
        return None


def api_key_and_tenant(s: Session, full_key: str):
    """The id of the bound tenant's active key matching ``full_key`` and that tenant's row
    (its columns as attributes, read-only: what the API reads of ``g.tenant``), or None.

    One Core statement with the tenant named in it (every API request asks; loading the
    key and the tenant as ORM objects cost more than the rest of the authentication)."""
    row = s.connection().execute(_KEY_AND_TENANT, {"key_hash": _hash_key(full_key),
                                                   "tenant_id": bound_tenant_id(s)}).first()
    return (row.api_key_id, row) if row else None


_KEYS, _TENANTS = ApiKey.__table__, Tenant.__table__
_KEY_AND_TENANT = (select(_KEYS.c.id.label("api_key_id"), *_TENANTS.c)
                   .join_from(_KEYS, _TENANTS, _TENANTS.c.id == _KEYS.c.tenant_id)
                   .where(_KEYS.c.tenant_id == bindparam("tenant_id"), _KEYS.c.key_hash == bindparam("key_hash"),
                          _KEYS.c.revoked_at.is_(None)))


def verify_api_key(s: Session, full_key: str) -> ApiKey | None:
    """The active key of the bound tenant matching ``full_key``, or None."""
    found = api_key_and_tenant(s, full_key)
    return s.get(ApiKey, (found[1].id, found[0])) if found else None


def list_api_keys(s: Session) -> list[ApiKey]:
    return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())))


def get_api_key(s: Session, key_id: uuid.UUID) -> ApiKey:
    """The bound tenant's key with this id; NotFound otherwise."""
    key = s.get(ApiKey, (bound_tenant_id(s), key_id))
    if key is None:
        raise NotFound("api key")
    return key


def revoke_api_key(s: Session, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key of the bound tenant (revoking twice keeps the first time); NotFound
    for an id the tenant does not have."""
    key = get_api_key(s, key_id)
    if key.revoked_at is None:
        key.revoked_at = now_utc()
    s.flush()
    return key

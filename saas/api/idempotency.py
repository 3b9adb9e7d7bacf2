"""Idempotency keys for API writes: a client that retries a request (after a timeout, a
dropped connection, a crash on its side) gets the first answer again instead of a second
effect.

A write endpoint opts in with ``@idempotent`` directly above the view, below
``@access(API)``::

    @api_route("/transactions", ["POST"], "Record a transaction", request_schema=...,
               params={IDEMPOTENCY_HEADER: IDEMPOTENCY_PARAM}, ...)
    @access(API)
    @idempotent
    def create_transaction(body):
        ...
        return transaction_json(tx), 201

and the blueprint calls ``check_keys_first(bp)`` once, so that a missing or malformed key
is answered 400 before the body is even read.

The rules (as Stripe and the IETF draft "The Idempotency-Key HTTP Header Field" have them):

- The ``Idempotency-Key`` header is required: 400 ``idempotency_key_required`` without
  it, 400 ``idempotency_key_invalid`` for more than 128 characters or anything but
  printable ASCII.
- Keys are per tenant (unique ``(tenant_id, key)`` in ``idempotency_records``).
- The first successful answer (status < 400) is stored with a hash of the method, the
  path and the canonical JSON body, in the same transaction as the effect. A retry with
  the same key and the same request gets that status and body back (with the header
  ``Idempotent-Replayed: true``) and changes nothing. The same key with another request
  is 409 ``idempotency_key_reused``.
- A refused request (422, 404 ...) stores nothing: its transaction is rolled back, so the
  client may fix the body and retry with the same key.
- Concurrency: the key is looked up first, outside any write lock; then, where the
  writes begin (``begin_effect``: before the view, or inside it after its reads), it is
  claimed. Two requests with the same key cannot both claim it: on PostgreSQL the claim
  (its row inserted) waits for the first transaction and then meets the unique
  constraint, whereupon it replays the stored answer; on SQLite write transactions are
  serialised (``db.begin_writes``: BEGIN IMMEDIATE in the writers' queue), so the second
  request looks again under the lock, finds the committed record and replays it; the
  first stores its record with its answer, in the transaction of its effect.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from typing import Any, Callable

from flask import Blueprint, current_app, g, request
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saas import db
from saas.api.spec import ApiError
from saas.customers.models import IdempotencyRecord
from saas.errors import NotFound, ValidationFailed
from saas.jobs import job

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 128
_KEY_RE = re.compile(r"^[\x20-\x7e]+$")

# The OpenAPI parameter for ``api_route(params={IDEMPOTENCY_HEADER: IDEMPOTENCY_PARAM})``.
IDEMPOTENCY_PARAM = {
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "description": "A key the client chooses for this request (a UUID is a good choice), at most "
                   f"{MAX_KEY_LENGTH} printable ASCII characters, unique per tenant. A retry with the "
                   "same key and the same body returns the first answer (with the header "
                   "Idempotent-Replayed: true) and changes nothing; the same key with another body "
                   "answers 409 with the code idempotency_key_reused. A refused request (4xx) is not "
                   "remembered, so it may be corrected and retried with the same key.",
}


def idempotency_key() -> str:
    """The request's Idempotency-Key; raises ApiError 400 when it is missing or malformed."""
    raw = request.headers.get(IDEMPOTENCY_HEADER)
    key = (raw or "").strip()
    if not key:
        raise ApiError(400, "idempotency_key_required",
                       _l("Send an Idempotency-Key header with a key of your choice for this request "
                          "(a UUID, for example); a retry with the same key is answered without "
                          "recording anything twice."))
    if len(key) > MAX_KEY_LENGTH or not _KEY_RE.match(key):
        raise ApiError(400, "idempotency_key_invalid",
                       _l("The Idempotency-Key must be 1 to %(n)s printable ASCII characters.",
                          n=MAX_KEY_LENGTH))
    return key


def request_hash(body: Any = None, raw: bytes | None = None) -> str:
    """SHA-256 of the method, the path and the body: the parsed JSON ``body`` in canonical
    form (sorted keys, no spaces), else the ``raw`` bytes."""
    if raw is None:
        payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    else:
        payload = raw
    h = hashlib.sha256()
    h.update(f"{request.method}\n{request.path}\n".encode())
    h.update(payload)
    return h.hexdigest()


_RECORDS = IdempotencyRecord.__table__
_STORED = select(_RECORDS.c.request_hash, _RECORDS.c.response, _RECORDS.c.status_code).where(
    _RECORDS.c.tenant_id == bindparam("tenant_id"), _RECORDS.c.key == bindparam("key"))


_INSERT_RECORD = _RECORDS.insert()  # built once: values() per request cost as much as the insert


def _stored(s: Session, key: str):
    """The stored (request_hash, response, status_code) of ``key`` in the bound tenant, or
    None. A Core statement with the tenant named (every API write looks twice: the ORM
    would cost more than the rest of the look-up)."""
    return s.connection().execute(_STORED, {"tenant_id": db.bound_tenant_id(s), "key": key}).first()


def _replay(record, digest: str):
    if record.request_hash != digest:
        raise ApiError(409, "idempotency_key_reused",
                       _l("This Idempotency-Key was already used for a different request. Use a new "
                          "key for a new request."))
    return record.response, record.status_code, {REPLAYED_HEADER: "true"}


def _split(rv) -> tuple[Any, int, dict]:
    """A view's return value as (JSON-ready body, status, headers)."""
    status, headers = 200, {}
    if isinstance(rv, tuple):
        if len(rv) == 3:
            body, status, headers = rv
        elif len(rv) == 2:
            body, status = rv
        else:
            raise TypeError("an idempotent view returns body, (body, status) or (body, status, headers)")
    else:
        body = rv
    if not isinstance(status, int):
        raise TypeError("an idempotent view returns its status as an int")
    # Exactly what the stored copy will hold, so the first answer and a replay are equal.
    return json.loads(current_app.json.dumps(body)), status, dict(headers or {})


def _stored_now(s: Session, key: str):
    """``_stored`` as committed by now, from a request that has not begun to write: on
    SQLite its read transaction ends first (its snapshot predates the other's commit)."""
    if s.get_bind().dialect.name == "sqlite" and not (s.new or s.dirty or s.deleted):
        s.commit()
    return _stored(s, key)


class _Replay(Exception):
    """Raised by ``begin_effect`` when the key turns out to be taken: answer the stored response."""

    def __init__(self, record):
        self.record = record


class _Pending:
    """The request's idempotency key between its first look-up and the stored answer."""

    def __init__(self, s: Session, key: str, digest: str):
        self.s, self.key, self.digest = s, key, digest
        self.record: IdempotencyRecord | None = None
        self.begun = False


def begin_effect(expire: bool = True) -> None:
    """Start the writes of the current idempotent request: take the write lock (SQLite,
    ``db.begin_writes``, which ``expire``s what was loaded unless told not to) and claim
    the key. When another request with this key has answered meanwhile, its answer is
    replayed instead (``respond_once`` catches the exception this raises). Called by
    ``respond_once`` before the view, or by a view declared ``@idempotent(effect_in_view=True)``
    after its reads, so that those reads stay outside SQLite's write lock."""
    p: _Pending = g.idempotency
    s = p.s
    db.begin_writes(s, expire=expire)
    if s.get_bind().dialect.name == "sqlite":
        # Writers are serialised from here on: nobody can store this key before we commit.
        stored = _stored(s, p.key)
        if stored is not None:
            raise _Replay(stored)
    else:
        record = IdempotencyRecord(key=p.key, request_hash=p.digest, status_code=0, response={})
        try:
            with s.begin_nested():
                s.add(record)
                s.flush()
        except IntegrityError:
            # A concurrent request with this key claimed it first and has committed by now.
            stored = _stored(s, p.key)
            if stored is None:  # pragma: no cover - the claim is only visible once committed
                raise ApiError(409, "idempotency_key_in_use",
                               _l("A request with this Idempotency-Key is still being processed. Retry "
                                  "in a moment.")) from None
            raise _Replay(stored) from None
        p.record = record
    p.begun = True


def respond_once(s: Session, key: str, digest: str, produce: Callable[[], Any], effect_in_view: bool = False):
    """Answer with ``produce()`` the first time ``key`` is seen in the bound tenant and
    with the stored answer afterwards (see the module docstring). ``s`` is the request's
    session; its transaction is committed or rolled back by the request lifecycle.
    ``effect_in_view``: ``produce`` calls ``begin_effect`` itself before it writes."""
    record = _stored(s, key)
    if record is not None:
        return _replay(record, digest)
    p = g.idempotency = _Pending(s, key, digest)
    try:
        if not effect_in_view:
            begin_effect()
        body, status, headers = _split(produce())
    except _Replay as r:
        return _replay(r.record, digest)
    except (ValidationFailed, NotFound, ApiError):
        # A refusal from the reads may come from a request with this key that answered
        # meanwhile (e.g. its transaction now exists): then its answer stands.
        stored = None if p.begun else _stored_now(s, key)
        if stored is None:
            raise
        return _replay(stored, digest)
    if status >= 400 and not p.begun:
        stored = _stored_now(s, key)
        if stored is not None:
            return _replay(stored, digest)
    if status < 400:
        if not p.begun:
            raise RuntimeError("an idempotent view answered success without calling begin_effect()")
        if p.record is None:
            # SQLite: the first time the key is written; a Core insert (the column defaults
            # fill id and created_at), after the view's own changes.
            s.flush()
            s.connection().execute(_INSERT_RECORD, {"tenant_id": db.bound_tenant_id(s), "key": key,
                                                    "request_hash": digest, "status_code": status, "response": body})
        else:
            p.record.status_code = status
            p.record.response = body
            s.flush()
    # Otherwise the request's transaction is rolled back, and the claim with it.
    return body, status, headers


def idempotent(view: Callable | None = None, *, effect_in_view: bool = False) -> Callable:
    """Decorator for an API write view: requires an Idempotency-Key and answers retries
    with the first answer. Put it below ``@access(API)``. With ``effect_in_view=True``
    the view reads first and calls ``begin_effect()`` where its writes begin."""
    if view is None:
        return functools.partial(idempotent, effect_in_view=effect_in_view)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = idempotency_key()
        if "body" in kwargs:
            digest = request_hash(kwargs["body"])
        else:
            digest = request_hash(raw=request.get_data(cache=True))
        return respond_once(db.session(), key, digest, lambda: view(*args, **kwargs), effect_in_view)

    wrapper.huitou_idempotent = True
    wrapper.huitou_reads_first = True
    return wrapper


def check_keys_first(bp: Blueprint) -> None:
    """Make ``bp`` answer a missing or malformed Idempotency-Key before anything else of an
    idempotent endpoint (after authentication, before the body is read)."""

    @bp.before_request
    def _require_idempotency_key():
        view = current_app.view_functions.get(request.endpoint)
        load = getattr(view, "huitou_idempotent_load", None)
        if load is not None:
            # An endpoint whose address names an object: not found (404) comes first, with
            # or without a key; the view gets what was loaded (``g.idempotent_object``).
            g.idempotent_object = load(db.session(), **(request.view_args or {}))
        if getattr(view, "huitou_idempotent", False):
            idempotency_key()


# A client retries within minutes or hours; a month is ample, and the table stays small.
KEEP_DAYS = 30


@job("expire-idempotency-keys")
def expire_idempotency_records(s: Session, as_of: dt.date) -> str | None:
    """Delete the bound tenant's idempotency records created more than KEEP_DAYS days
    before ``as_of``. Running it twice for the same day deletes nothing the second time."""
    cutoff = dt.datetime.combine(as_of - dt.timedelta(days=KEEP_DAYS), dt.time.min, tzinfo=dt.timezone.utc)
    n = s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)).rowcount
    return f"{n} expired idempotency keys deleted" if n else None

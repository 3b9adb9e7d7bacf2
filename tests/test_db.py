"""SQLite write transactions: the writers' queue (saas/db.py ``_QueuedWriters``),
``begin_writes`` for requests that read before they write, and the idempotency layer's
reads-first path (saas/api/idempotency.py ``begin_effect``)."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from saas import db
from saas.api import idempotency
from saas.customers.models import Customer, IdempotencyRecord
from saas.db import begin_writes, make_engine


@pytest.fixture
def sqlite_file(tmp_path):
    path = tmp_path / "queue.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine, path
    engine.dispose()


def test_a_writer_waits_its_turn_instead_of_failing(sqlite_file):
    """With SQLite's busy timeout at 0 a second BEGIN IMMEDIATE fails at once with
    'database is locked'; in the queue it waits for the first writer's COMMIT and goes on."""
    engine, path = sqlite_file
    order = []
    first = engine.connect()
    first.begin()  # BEGIN IMMEDIATE, in the queue
    first.execute(text("INSERT INTO t VALUES (1)"))

    bare = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        bare.execute("BEGIN IMMEDIATE")  # outside the queue: SQLite's own lock refuses
    bare.close()

    def second():
        with engine.connect() as conn:
            conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=0")
            with conn.begin():  # waits for the queue, not SQLite's busy handler
                order.append("second began")
                conn.execute(text("INSERT INTO t VALUES (2)"))

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.3)
    assert order == []  # still waiting: the first writer has not committed
    order.append("first commits")
    first.commit()
    t.join(10)
    assert order == ["first commits", "second began"]
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT n FROM t")).scalars()) == [1, 2]
    first.close()


def test_the_turn_ends_with_a_rollback_and_with_a_failed_statement(sqlite_file):
    engine, _path = sqlite_file
    with engine.connect() as conn:
        conn.begin()
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.rollback()
    with engine.connect() as conn:
        with pytest.raises(OperationalError):
            with conn.begin():
                conn.execute(text("INSERT INTO nowhere VALUES (1)"))
    done = threading.Event()

    def writer():
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (3)"))
        done.set()

    threading.Thread(target=writer).start()
    assert done.wait(5), "a rolled-back writer kept the queue"


def test_readers_do_not_queue(sqlite_file):
    engine, _path = sqlite_file
    writer = engine.connect()
    writer.begin()
    writer.execute(text("INSERT INTO t VALUES (1)"))
    reader = engine.execution_options(**{db.SQLITE_BEGIN: "DEFERRED"}).connect()
    with reader.begin():
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0  # WAL: the last commit
    reader.close()
    writer.commit()
    writer.close()


def _other_writer_commits(app, tenant, name):
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    s.add(Customer(name=name))
    s.commit()
    s.close()


def test_begin_writes_after_reads_while_another_writer_committed(app, make_tenant):
    """A transaction that read (DEFERRED) cannot write once another writer has committed
    (SQLite: 'database is locked' at once, whatever the timeout); ``begin_writes`` ends
    the reads and takes the lock afresh, so the write goes through."""
    tenant, _owner = make_tenant("hotel")
    database = app.extensions["huitou_db"]
    sqlite = database.engine.dialect.name == "sqlite"

    s = database.new_session(read_only=True, tenant_id=tenant.id)
    s.scalars(select(Customer)).all()
    _other_writer_commits(app, tenant, "Other")
    s.add(Customer(name="Late"))
    if sqlite:
        with pytest.raises(OperationalError, match="locked"):
            s.flush()
    s.rollback()
    s.close()

    s = database.new_session(read_only=True, tenant_id=tenant.id)
    s.scalars(select(Customer)).all()
    _other_writer_commits(app, tenant, "Other 2")
    begin_writes(s)
    s.add(Customer(name="After begin_writes"))
    s.commit()
    names = set(s.scalars(select(Customer.name)))
    assert {"Other", "Other 2", "After begin_writes"} <= names
    s.close()


def test_begin_writes_refuses_pending_changes_and_expires_what_was_read(app, make_tenant):
    tenant, _owner = make_tenant("hotel")
    database = app.extensions["huitou_db"]
    s = database.new_session(read_only=True, tenant_id=tenant.id)
    s.add(Customer(name="Pending"))
    s.flush()  # a write in the read phase
    if database.engine.dialect.name == "sqlite":
        s.add(Customer(name="Another"))
        with pytest.raises(RuntimeError, match="begin_writes"):
            begin_writes(s)
    s.rollback()

    c = Customer(name="Stale")
    s.add(c)
    s.commit()
    s.scalar(select(Customer).where(Customer.id == c.id))  # read, then changed elsewhere
    other = database.new_session(tenant_id=tenant.id)
    other.get(Customer, (tenant.id, c.id)).name = "Fresh"
    other.commit()
    other.close()
    begin_writes(s)
    if database.engine.dialect.name == "sqlite":
        assert c.name == "Fresh"  # reloaded after the read phase
    s.rollback()
    s.close()


def test_a_key_stored_between_the_look_up_and_the_writes_is_replayed(app, make_tenant):
    """Reads-first idempotency: another request stores the same key after this one looked
    it up and before its writes began: this one answers the stored response and writes
    nothing (the view stops at ``begin_effect``)."""
    tenant, _owner = make_tenant("hotel")
    database = app.extensions["huitou_db"]
    effects = []

    def produce():
        other = database.new_session(tenant_id=tenant.id)
        other.add(IdempotencyRecord(key="k1", request_hash="h", status_code=201, response={"first": True}))
        other.commit()
        other.close()
        idempotency.begin_effect()
        effects.append("wrote")
        return {"second": True}, 201

    with app.test_request_context("/api/v1/transactions", method="POST"):
        s = db.session(reads_first=True)
        db.bind_tenant(s, tenant.id)
        body, status, headers = idempotency.respond_once(s, "k1", "h", produce, effect_in_view=True)
        s.rollback()
    assert (body, status, headers) == ({"first": True}, 201, {idempotency.REPLAYED_HEADER: "true"})
    assert effects == []


def test_an_idempotent_view_must_begin_its_effect(app, make_tenant):
    tenant, _owner = make_tenant("hotel")
    with app.test_request_context("/api/v1/transactions", method="POST"):
        s = db.session(reads_first=True)
        db.bind_tenant(s, tenant.id)
        with pytest.raises(RuntimeError, match="begin_effect"):
            idempotency.respond_once(s, "k2", "h", lambda: ({}, 201), effect_in_view=True)
        s.rollback()


def test_a_refusal_caused_by_the_same_key_answering_meanwhile_is_replayed(app, make_tenant):
    """The reads of this request refuse it because a request with the same key has just
    done the same thing (e.g. 'this external id is already recorded'): the first answer
    stands, not the refusal."""
    from saas.errors import ValidationFailed

    tenant, _owner = make_tenant("hotel")
    database = app.extensions["huitou_db"]

    def produce():
        other = database.new_session(tenant_id=tenant.id)
        other.add(IdempotencyRecord(key="k3", request_hash="h", status_code=201, response={"first": True}))
        other.commit()
        other.close()
        raise ValidationFailed.one("external_id", "already recorded")

    with app.test_request_context("/api/v1/transactions", method="POST"):
        s = db.session(reads_first=True)
        db.bind_tenant(s, tenant.id)
        body, status, _headers = idempotency.respond_once(s, "k3", "h", produce, effect_in_view=True)
        s.rollback()
    assert (body, status) == ({"first": True}, 201)

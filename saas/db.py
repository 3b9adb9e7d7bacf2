"""Engine, session per request, the declarative Base and the tenancy guards.

Tenancy (DESIGN.md, invariants 1-3):
- every tenant-owned model mixes in ``TenantScoped``: primary key ``(tenant_id, id)``,
  UUIDv7 ids made in Python;
- a session is bound to one tenant with ``bind_tenant``; every ORM select, update and
  delete is filtered to it by a ``do_orm_execute`` listener, and a query for a
  tenant-owned entity on an unbound session raises ``TenancyError`` (fail closed);
- ``before_flush`` stamps new rows with the bound tenant and refuses rows of another;
- on PostgreSQL each transaction starts with ``app.tenant_id`` / ``app.user_id`` set
  locally, which the row-level security policies read.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import os
import sqlite3
import uuid
from typing import Any

import uuid6
from flask import current_app, g, has_request_context, request
from sqlalchemy import (
    DateTime,
    TypeDecorator,
    ForeignKey,
    MetaData,
    Uuid,
    bindparam,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    declared_attr,
    make_transient_to_detached,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)


def new_id() -> uuid.UUID:
    """A new UUIDv7: time-ordered (index friendly) and not guessable. (uuid6.UUID is a
    uuid.UUID; not copying it into a plain one saves a third of the cost, which bulk
    imports feel.)"""
    return uuid6.uuid7()


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# The few tables that are not owned by one tenant. Everything else must be TenantScoped
# (tests/test_schema.py holds the schema to this).
GLOBAL_TABLES = frozenset({"tenants", "users", "alembic_version"})


class TenantScoped:
    """Mixin for every tenant-owned table: primary key (tenant_id, id)."""

    # sort_order puts tenant_id first in every table and primary key (Citus wants it there)
    @declared_attr
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(
            Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, sort_order=-10
        )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id, sort_order=-9)


class TenancyError(RuntimeError):
    """A query or write that would cross, or ignore, the tenant wall."""


def bind_tenant(session: Session, tenant_id: uuid.UUID | None, user_id: uuid.UUID | None = None) -> None:
    """Scope ``session`` to one tenant (and, for RLS on memberships, one user).

    Takes effect at once, also inside a transaction that has already begun.
    """
    session.info["tenant_id"] = tenant_id
    if user_id is not None:
        session.info["user_id"] = user_id
    if session.in_transaction():
        _set_pg_settings(session, session.connection())


def bind_user(session: Session, user_id: uuid.UUID) -> None:
    """Name the acting user (PostgreSQL lets a user read their own memberships by it)."""
    bind_tenant(session, session.info.get("tenant_id"), user_id)


def bound_tenant_id(session: Session) -> uuid.UUID:
    """The tenant the session is bound to; raises TenancyError when none is."""
    tid = session.info.get("tenant_id")
    if tid is None:
        raise TenancyError("no tenant is bound to this session")
    return tid


def _set_pg_settings(session: Session, connection) -> None:
    if connection.dialect.name != "postgresql":
        return
    tid = session.info.get("tenant_id")
    uid = session.info.get("user_id")
    connection.execute(
        text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
        {"t": str(tid) if tid else "", "u": str(uid) if uid else ""},
    )


@event.listens_for(Session, "after_begin")
def _after_begin(session, transaction, connection):
    _set_pg_settings(session, connection)


@event.listens_for(Session, "do_orm_execute")
def _scope_reads(state):
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get("all_tenants") or state.session.info.get("all_tenants"):
        return
    tid = state.session.info.get("tenant_id")
    if tid is None:
        if any(issubclass(m.class_, TenantScoped) for m in state.all_mappers):
            raise TenancyError("query for tenant-owned rows without a bound tenant")
        # Tenant tables reached only through a join see nothing: fail closed.
        state.statement = state.statement.options(_NO_TENANT)
    elif isinstance(state.parameters, list):
        # Many parameter sets (an ORM bulk UPDATE by primary key): the tenant as a value.
        state.statement = state.statement.options(
            with_loader_criteria(TenantScoped, lambda cls: cls.tenant_id == tid, include_aliases=True))
    else:
        # One option for every query, its tenant a bound parameter: a criterion made per
        # query (a lambda over the request's tenant id) cost more than many queries themselves.
        state.statement = state.statement.options(_BOUND_TENANT)
        state.parameters = {**(state.parameters or {}), TENANT_PARAM: tid}


# The bound parameter that carries the session's tenant into every ORM query.
TENANT_PARAM = "huitou_tenant_id"
_TENANT_BIND = bindparam(TENANT_PARAM, type_=Uuid())
_BOUND_TENANT = with_loader_criteria(TenantScoped, lambda cls: cls.tenant_id == _TENANT_BIND,
                                     include_aliases=True, track_closure_variables=False)
_NO_TENANT = with_loader_criteria(TenantScoped, lambda cls: false(), include_aliases=True)


@event.listens_for(Session, "before_flush")
def _stamp_writes(session, flush_context, instances):
    if session.info.get("all_tenants"):
        return
    tid = session.info.get("tenant_id")
    for obj in session.new:
        if not isinstance(obj, TenantScoped):
            continue
        if obj.tenant_id is None:
            if tid is None:
                raise TenancyError(f"new {type(obj).__name__} without a bound tenant")
            obj.tenant_id = tid
        elif obj.tenant_id != tid:
            raise TenancyError(f"new {type(obj).__name__} belongs to another tenant")
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, TenantScoped) and obj.tenant_id != tid:
            raise TenancyError(f"{type(obj).__name__} of another tenant cannot be changed")


_INSERTS: dict = {}


def insert_now(s: Session, obj: TenantScoped) -> None:
    """Write the new tenant-owned ``obj`` at once with one Core INSERT and make it
    persistent in ``s``, as a flush would (the ORM's unit of work costs several times the
    statement itself, which the award path feels under SQLite's write lock).

    As the flush would: pending changes are flushed first (what ``obj`` refers to is
    written before it), the Python-side column defaults are applied to ``obj``, a column
    left to its server default is left out (and loads when first read), and the tenant is
    the bound one (``_stamp_writes``' guard). For models without relationships to cascade."""
    state = sa_inspect(obj)
    if state.key is not None or state.session_id is not None:
        raise ValueError("insert_now() takes a new object that is not in a session")
    if s.new or s.dirty or s.deleted:
        s.flush()
    if not s.info.get("all_tenants"):
        tid = bound_tenant_id(s)
        if obj.tenant_id is None:
            obj.tenant_id = tid
        elif obj.tenant_id != tid:
            raise TenancyError(f"new {type(obj).__name__} belongs to another tenant")
    mapper = state.mapper
    values = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if prop.key in state.dict:
            values[column.key] = state.dict[prop.key]
        elif column.default is not None and (column.default.is_scalar or column.default.is_callable):
            value = column.default.arg(None) if column.default.is_callable else column.default.arg
            setattr(obj, prop.key, value)
            values[column.key] = value
        elif column.server_default is None:
            setattr(obj, prop.key, None)
            values[column.key] = None
    table = mapper.local_table
    stmt = _INSERTS.get(table)
    if stmt is None:
        stmt = _INSERTS[table] = table.insert()
    s.connection().execute(stmt, values)
    make_transient_to_detached(obj)
    s.add(obj)


# SQLite: a transaction that reads and then writes fails at once with "database is
# locked" when another writer got in first, whatever the busy timeout. Write transactions
# therefore start with BEGIN IMMEDIATE; sessions made read-only (GET requests) start
# DEFERRED so they keep WAL's concurrent readers and never block a writer. A request that
# reads a lot before it writes (the API's writes) starts DEFERRED too and calls
# ``begin_writes`` where its writes begin: only the writes then hold the database's lock.
SQLITE_BEGIN = "sqlite_begin"


class _QueuedWriters(sqlite3.Connection):
    """A SQLite connection whose BEGIN IMMEDIATE first waits its turn on a lock file next
    to the database (``<file>-writers``, flock), released right after COMMIT or ROLLBACK.

    SQLite's own busy handler makes a waiting writer sleep (1, 2, 5 ... 100 ms) and try
    again, so under load a writer may wait for seconds while others get in; a blocking
    flock hands the turn on the moment it is free. Writers without the queue (another
    program) still meet SQLite's lock and its busy timeout, as before.

    The wait has no timeout of its own: a writer waits as long as the writer before it
    holds its transaction (an import of a large file: seconds), where SQLite alone would
    have failed it with "database is locked" after the busy timeout. Every process that
    writes must run on the machine that holds the file (as SQLite's WAL requires anyway)."""

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        name = os.fspath(database)
        memory = name in ("", ":memory:") or name.startswith("file:") or "mode=memory" in name
        self._queue_path = None if memory else name + "-writers"
        self._queue_fd: int | None = None
        self._queue_pid = 0
        self._queued = False

    def wait_turn(self) -> None:
        if self._queue_path is None or self._queued:
            return
        if self._queue_fd is None or self._queue_pid != os.getpid():
            # One open file per connection and process: flock locks belong to the open file,
            # so threads (and forked workers) each need their own to wait for one another.
            self._queue_fd = os.open(self._queue_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._queue_pid = os.getpid()
        fcntl.flock(self._queue_fd, fcntl.LOCK_EX)
        self._queued = True

    def end_turn(self) -> None:
        if self._queued:
            self._queued = False
            fcntl.flock(self._queue_fd, fcntl.LOCK_UN)

    def commit(self):
        try:
            super().commit()
        finally:
            self.end_turn()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self):
        try:
            super().close()
        finally:
            self.end_turn()
            if self._queue_fd is not None and self._queue_pid == os.getpid():
                os.close(self._queue_fd)
            self._queue_fd = None


# The files of a SQLite database of this app: the database, WAL's two, a rollback
# journal (bulk loads), and the writers' queue (``_QueuedWriters``).
SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal", "-writers")


def remove_sqlite_files(path: str | os.PathLike) -> None:
    """Delete the SQLite database at ``path`` and the files that go with it."""
    for suffix in SQLITE_FILE_SUFFIXES:
        try:
            os.remove(os.fspath(path) + suffix)
        except FileNotFoundError:
            pass


def setup_sqlite_connection(dbapi_connection: sqlite3.Connection) -> None:
    """Set up a new ``sqlite3`` connection as the app uses it: BEGIN stated by the caller
    (SQLAlchemy's "begin" event here, the pysqlite recipe), foreign keys, WAL,
    synchronous=NORMAL, a 30 s busy timeout."""
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, busy timeout, BEGIN IMMEDIATE and
    the writers' queue."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "factory": _QueuedWriters})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, connection_record):
            setup_sqlite_connection(dbapi_connection)

        @event.listens_for(engine, "begin")
        def _sqlite_begin_tx(conn):
            mode = conn.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
            dbapi = conn.connection.dbapi_connection
            queued = mode == "IMMEDIATE" and isinstance(dbapi, _QueuedWriters)
            if queued:
                dbapi.wait_turn()
            try:
                conn.exec_driver_sql(f"BEGIN {mode}")
            except BaseException:
                if queued:
                    dbapi.end_turn()
                raise

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def begin_writes(s: Session, expire: bool = True) -> None:
    """Where a request that began with reads (a DEFERRED SQLite transaction) starts to
    write: its read transaction ends (it wrote nothing) and the next statement begins
    IMMEDIATE, in the writers' queue. Whatever the writes depend on must be read again
    after this call; ``expire`` (the default) makes every loaded object reload on its
    next use. A caller that passes False vouches that what it keeps cannot have changed
    in a way that matters. Nothing to do on PostgreSQL (row locks) or in a transaction
    that began IMMEDIATE."""
    if s.get_bind().dialect.name != "sqlite":
        return
    if s.in_transaction():
        if s.connection().get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE") == "IMMEDIATE":
            return
        if s.new or s.dirty or s.deleted:
            raise RuntimeError("begin_writes() after changes: they would be written outside the write lock")
        s.commit()
        if expire:
            s.expire_all()
    s.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})


class Database:
    """The app's engine and its request-scoped session."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.factory: sessionmaker | None = None

    def init_app(self, app) -> None:
        self.engine = make_engine(app.config["DATABASE_URL"])
        self.factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.read_factory = sessionmaker(bind=self.engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}),
                                         expire_on_commit=False)
        app.extensions["huitou_db"] = self
        app.teardown_appcontext(self._close)

    def new_session(self, read_only: bool = False, **info: Any) -> Session:
        """A session outside the request scope (CLI, jobs, threads); close it yourself.

        ``read_only`` only chooses how SQLite begins (DEFERRED): such a session may still
        write when nothing else writes at the same time.
        """
        s = (self.read_factory if read_only else self.factory)()
        s.info.update(info)
        return s

    @staticmethod
    def _close(exc) -> None:
        s = g.pop("db_session", None)
        if s is not None:
            s.rollback()
            s.close()


def get_db() -> Database:
    return current_app.extensions["huitou_db"]


def session(reads_first: bool = False) -> Session:
    """The session of the current request (or app context). ``reads_first``, when this
    call makes it: the request reads before it writes and calls ``begin_writes`` before
    its first write, so on SQLite it begins DEFERRED like a GET."""
    if "db_session" not in g:
        g.db_session = get_db().new_session(read_only=reads_first or request.method in ("GET", "HEAD", "OPTIONS")
                                            if has_request_context() else False)
    return g.db_session


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use saas.clock.now_utc()")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)

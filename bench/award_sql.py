"""The award's own SQL on the raw driver: what SQLite and the serving stack alone allow.

Awards made through the app (in-process, the Flask test client) are recorded statement by
statement as the driver received them: the SQL text, the parameters after SQLAlchemy's
type processing, BEGIN, COMMIT and ROLLBACK. A bare Flask route (``raw_app``) then replays
one recorded award per request on a ``sqlite3`` connection of its process: the same
statements in the same order, with the same pragmas and the same writers' queue
(``saas.db._QueuedWriters``), new ids and keys in place of the recorded ones (the rows are
real rows: the unique keys, the foreign keys and the ledger's triggers all apply).

Served with gunicorn like the app and loaded the same way, it answers how many awards per
second SQLite, gunicorn and Flask could serve on this machine if the application's own
Python (SQLAlchemy's ORM, the tenancy listeners, Babel, the JSON schema, the points rules)
cost nothing: the ceiling any award path built on this stack can reach here.

It writes into its own copy of the bench database; nothing it writes is verified.
"""
from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

_INSERT = re.compile(r'^\s*INSERT INTO\s+"?(\w+)"?\s*\(([^)]*)\)', re.IGNORECASE)
# The columns whose recorded values must be new in every replay (unique per tenant).
_FRESH = {"id", "key"}


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database ``source`` at ``target`` (the backup API)."""
    from saas.db import remove_sqlite_files

    remove_sqlite_files(target)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def capture(overrides: dict, prime: list, requests: list, path: Path) -> int:
    """Make the awards ``prime`` and then ``requests`` (see ``bench.award.award_requests``)
    through the app of ``overrides``, one at a time, and write what each of ``requests``
    sent to the driver to ``path`` (JSON: a list of awards, each a list of ``[sql,
    params]``; ``sql`` "COMMIT" / "ROLLBACK" for the transaction ends). ``prime``, made
    unrecorded, should give every customer its loyalty account: a replay cannot create
    an account twice. Returns how many were recorded."""
    from sqlalchemy import event

    from saas import create_app

    app = create_app({**overrides, "TESTING": True})
    engine = app.extensions["huitou_db"].engine
    client = app.test_client()
    current: list | None = None

    def before(conn, cursor, statement, parameters, context, executemany):
        if current is not None:
            if executemany:
                raise RuntimeError("award_sql.capture: executemany is not replayed")
            current.append([statement, list(parameters or ())])

    def ended(name):
        def listener(conn):
            if current is not None:
                current.append([name, []])
        return listener

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", ended("COMMIT"))
    event.listen(engine, "rollback", ended("ROLLBACK"))
    awards = []
    try:
        for i, (_m, url, body, headers) in enumerate(prime + requests):
            current = [] if i >= len(prime) else None
            r = client.post(url, json=body, headers=headers)
            if r.status_code != 201:
                raise RuntimeError(f"award_sql.capture: {r.status_code} {r.text[:300]}")
            if current is not None:
                awards.append(current)
            current = None
    finally:
        engine.dispose()
    for award in awards:
        for _sql, params in award:
            for v in params:
                if not isinstance(v, (str, int, float, type(None))):
                    raise RuntimeError(f"award_sql.capture: a parameter of type {type(v).__name__}")
    path.write_text(json.dumps(awards))
    return len(awards)


def fresh_values(award: list) -> list[str]:
    """The recorded values that must be new in a replay: the ids and keys the award's
    INSERTs wrote (a UUID as the driver got it, 32 hex digits, or any other string)."""
    out = []
    for sql, params in award:
        m = _INSERT.match(sql)
        if not m:
            continue
        columns = [c.strip().strip('"') for c in m.group(2).split(",")]
        for column, value in zip(columns, params):
            if column in _FRESH and isinstance(value, str) and value not in out:
                out.append(value)
    return out


def renamed(award: list, olds: list[str]) -> list:
    """``award`` with each of ``olds`` replaced by a new value wherever it occurs in a
    string parameter (a UUID also in its dashed form: keys and stored answers embed it)."""
    pairs = []
    for old in olds:
        new = uuid.uuid4().hex
        pairs.append((old, new))
        if re.fullmatch(r"[0-9a-f]{32}", old):
            pairs.append((str(uuid.UUID(hex=old)), str(uuid.UUID(hex=new))))
    out = []
    for sql, params in award:
        if params:
            fixed = []
            for v in params:
                if isinstance(v, str):
                    for old, new in pairs:
                        if old in v:
                            v = v.replace(old, new)
                fixed.append(v)
            params = fixed
        out.append((sql, params))
    return out


def connect(db_path: str) -> sqlite3.Connection:
    """A connection as the app's engine makes it (saas.db.make_engine): the writers' queue
    and ``setup_sqlite_connection``'s settings; BEGIN stated explicitly."""
    from saas.db import _QueuedWriters, setup_sqlite_connection

    conn = sqlite3.connect(db_path, timeout=30, factory=_QueuedWriters, check_same_thread=False)
    setup_sqlite_connection(conn)
    return conn


def replay(conn: sqlite3.Connection, award: list) -> None:
    """Run one award's statements (``renamed`` first) on ``conn``, as the app ran them."""
    cur = conn.cursor()
    try:
        for sql, params in award:
            if sql == "COMMIT":
                conn.commit()
            elif sql == "ROLLBACK":
                conn.rollback()
            else:
                if sql.startswith("BEGIN IMMEDIATE"):
                    conn.wait_turn()
                cur.execute(sql, params)
                cur.fetchall()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        conn.end_turn()
        raise
    finally:
        cur.close()


def split_writes(award: list) -> tuple[list, list]:
    """(reads, writes) of a recorded award: what it ran before its BEGIN IMMEDIATE, and its
    write transaction from BEGIN IMMEDIATE to COMMIT (the ends left out)."""
    start = next(i for i, (sql, _p) in enumerate(award) if sql.startswith("BEGIN IMMEDIATE"))
    end = next(i for i in range(len(award) - 1, start, -1) if award[i][0] == "COMMIT")
    return award[:start], award[start + 1:end]


class GroupCommit:
    """One writer thread per process that runs the write transactions of several requests
    as one SQLite transaction, each in a savepoint of its own: the awards that arrive while
    a transaction runs wait and go together in the next one (option (b) of the bench
    notes; measured on the raw replay only, the app does not do this)."""

    def __init__(self, db_path: str, max_batch: int = 64):
        import queue
        import threading

        self.db_path, self.max_batch = db_path, max_batch
        self.queue: queue.Queue = queue.Queue()
        self.batches = self.items = 0
        self._pid = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        import os
        import threading

        with self._lock:
            if self._pid != os.getpid():  # after gunicorn's fork: a writer per worker
                self._pid = os.getpid()
                threading.Thread(target=self._loop, daemon=True).start()

    def write(self, statements: list) -> None:
        """Run ``statements`` in the next group transaction; returns once it committed
        (raises what they raised: their savepoint was rolled back, the others kept)."""
        import threading

        self._start()
        item = [statements, threading.Event(), None]
        self.queue.put(item)
        item[1].wait()
        if item[2] is not None:
            raise item[2]

    def _loop(self) -> None:
        import queue

        conn = connect(self.db_path)
        cur = conn.cursor()
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                conn.wait_turn()
                cur.execute("BEGIN IMMEDIATE")
                for item in batch:
                    cur.execute("SAVEPOINT award")
                    try:
                        for sql, params in item[0]:
                            cur.execute(sql, params)
                            cur.fetchall()
                        cur.execute("RELEASE award")
                    except sqlite3.Error as exc:
                        cur.execute("ROLLBACK TO award")
                        cur.execute("RELEASE award")
                        item[2] = exc
                conn.commit()
            except BaseException as exc:  # the whole transaction failed: every request hears it
                if conn.in_transaction:
                    conn.rollback()
                conn.end_turn()
                for item in batch:
                    item[2] = item[2] or exc
            self.batches += 1
            self.items += len(batch)
            for item in batch:
                item[1].set()


def raw_app(db_path: str, capture_path: str, group_commit: bool = False):
    """A bare Flask app whose ``POST /bare`` reads the JSON body, replays the next recorded
    award on the raw driver and answers JSON (gunicorn: ``bench.award_sql:raw_app(...)``).
    ``group_commit``: each award's reads run on the request thread's connection and its
    writes go to the process's ``GroupCommit`` (serve with several threads per worker)."""
    import itertools
    import threading

    from flask import Flask, request

    awards = json.loads(Path(capture_path).read_text())
    olds = [fresh_values(a) for a in awards]
    app = Flask("raw-award")
    local = threading.local()
    turn = itertools.count()
    group = GroupCommit(db_path) if group_commit else None

    def connection() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:  # per thread of each worker (after the fork)
            conn = local.conn = connect(db_path)
        return conn

    @app.post("/bare")
    def bare():
        body = request.get_json()
        i = next(turn) % len(awards)
        award = renamed(awards[i], olds[i])
        if group is None:
            replay(connection(), award)
        else:
            reads, writes = split_writes(award)
            replay(connection(), reads)
            group.write(writes)
        return {"ok": True, "customer_ref": body.get("customer_ref")}, 201

    @app.get("/batches")
    def batches():  # this worker's counters
        import os

        return {"pid": os.getpid(), "batches": group.batches if group else 0, "awards": group.items if group else 0}

    @app.get("/")
    def index():
        return "ok"

    return app

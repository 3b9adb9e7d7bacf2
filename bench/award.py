"""Award-points API under gunicorn (issue 4, "Performance").

A fresh SQLite file with one hotel tenant (its preset programme), N customers and an API
key; the app served by gunicorn (W workers x T threads, gthread) on loopback; wrk (``make
bench`` installs it; a Lua script makes each request) or else a load generator of Python
threads with keep-alive ``http.client`` connections sends ``POST /api/v1/transactions`` (a
new Idempotency-Key each, a random customer and amount): requests/s, p50/p99, errors. The
same load, in the same run, against a bare Flask route served the same way gives the
ratio. Afterwards the ledger is verified (``saas.loyalty.ledger.verify`` per tenant, and
every answered transaction credited exactly its ``points_awarded``), and awards are
timed in-process (the Flask test client) to say where the time goes and how long each
holds SQLite's write lock.

    .venv/bin/python -m bench.award --customers 1000 --seconds 20 --clients 16 --workers 2 --threads 1

``gunicorn_server`` is also what tests/test_loyalty_concurrency.py serves the app with.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
OWNER_PASSWORD = "bench-password-2026"


# --- serving -----------------------------------------------------------------------------------

def app_spec(overrides: dict) -> str:
    """The gunicorn app spec of ``create_app(overrides)``."""
    return f"saas:create_app({overrides!r})"


def server_overrides(database_url: str, **more) -> dict:
    """The app's settings for a load test: no rate limit (every request of the load
    generator uses one key), TESTING off as in production."""
    return {"DATABASE_URL": database_url, "SECRET_KEY": "bench-not-secret", "TESTING": False,
            "RATELIMIT_ENABLED": False, **more}


class Served(NamedTuple):
    url: str  # the base URL
    pid: int  # gunicorn's master (its workers are its children)


@contextlib.contextmanager
def gunicorn_server(spec: str, log_path: Path, **kwargs):
    """Serve ``spec`` with gunicorn (``serve``); yields the base URL once it answers."""
    with serve(spec, log_path, **kwargs) as served:
        yield served.url


@contextlib.contextmanager
def serve(spec: str, log_path: Path, *, workers: int = 4, threads: int = 4, probe: str = "/",
          preload: bool = True, timeout: float = 60):
    """Serve ``spec`` with gunicorn (``workers`` processes of ``threads`` threads, gthread
    when threads > 1) on a free loopback port; yields ``Served`` once ``probe`` answers.
    The server's own log (errors, the app's log lines) goes to ``log_path``."""
    import gunicorn

    cmd = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", str(workers),
           "--threads", str(threads), "--worker-class", "gthread", "--backlog", "2048", "--keep-alive", "5", "--graceful-timeout", "5",
           "--log-level", "info"]  # info: the master says where it listens; no access log
    if preload:
        cmd.append("--preload")  # the app is built once and forked: a faster start on 2 cores
    if gunicorn.version_info >= (25,):
        cmd.append("--no-control-socket")
    cmd.append(spec)
    env = {k: v for k, v in os.environ.items() if k not in ("HUITOU_ENV", "DATABASE_URL", "MIGRATION_DATABASE_URL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Served(_wait_for(proc, log_path, probe, timeout), proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)  # quick shutdown: the load is over
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(proc: subprocess.Popen, log_path: Path, probe: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    base = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()}")
        if base is None:
            m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log_path.read_text())
            base = m.group(1) if m else None
        if base is not None:
            try:
                with urllib.request.urlopen(base + probe, timeout=5) as r:
                    if r.status < 500:
                        return base
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return base
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer within {timeout} s:\n{log_path.read_text()}")


def server_problems(log_path: Path) -> list[str]:
    """Lines of the server log that show a failure: tracebacks, 'database is locked',
    worker timeouts, unhandled errors."""
    bad = re.compile(r"database is locked|Traceback|unhandled error|WORKER TIMEOUT|Worker .* was sent|Error",
                     re.IGNORECASE)
    return [line for line in log_path.read_text(errors="replace").splitlines() if bad.search(line)]


# --- where the CPU goes while a target is loaded (Linux /proc) ----------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


CPU_KEYS = ("cpu_server_ms", "cpu_client_ms", "cpu_other_ms", "cores_busy")


def _figures(r: dict) -> dict:
    """What the report keeps of a wrk run: counts, rates, latencies, errors, CPU."""
    return {k: r[k] for k in ("requests", "seconds", "rps", "p50", "p90", "p99", "max", "mean", "errors", *CPU_KEYS)}


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live children (gunicorn's
    master and workers); 0 where /proc cannot tell."""
    total = 0.0
    try:
        pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return total


def _machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, summed over its cores."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


def _own_cpu() -> float:
    """CPU seconds of this process (the Python load generator) and its finished children (wrk)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def with_cpu(server_pid: int, load):
    """Run ``load()`` (it returns a result dict with ``requests``) and add to its result
    the CPU each request cost: ``cpu_server_ms`` (gunicorn's master and workers),
    ``cpu_client_ms`` (the load generator: wrk or this process), ``cpu_other_ms`` (the
    rest of the machine: the database server, anything else) and ``cores_busy`` (the
    machine's cores busy on average, out of ``os.cpu_count()``)."""
    server0, client0, (busy0, all0) = _process_cpu(server_pid), _own_cpu(), _machine_cpu()
    t0 = time.monotonic()
    r = load()
    wall = time.monotonic() - t0
    server, client, (busy, _all) = (_process_cpu(server_pid) - server0, _own_cpu() - client0,
                                    tuple(a - b for a, b in zip(_machine_cpu(), (busy0, all0))))
    n = max(r["requests"], 1)
    r.update(cpu_server_ms=round(server * 1000 / n, 3), cpu_client_ms=round(client * 1000 / n, 3),
             cpu_other_ms=round(max(busy - server - client, 0.0) * 1000 / n, 3),
             cores_busy=round(busy / wall, 2) if wall > 0 else 0.0)
    return r


# --- the HTTP client ---------------------------------------------------------------------------

class Http:
    """One keep-alive connection per thread to ``base``; JSON in and out."""

    def __init__(self, base: str, timeout: float = 60):
        m = re.match(r"http://([^:/]+):(\d+)", base)
        self.host, self.port = m.group(1), int(m.group(2))
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        """(status, headers, parsed JSON or text). A keep-alive connection the server had
        closed is reopened and the request sent again (only when no answer was read; the
        writes carry an Idempotency-Key, so a resend cannot act twice)."""
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        for attempt in (1, 2):
            c = self._conn()
            try:
                c.request(method, path, body=data, headers=hdrs)
                r = c.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        if r.getheader("Connection", "").lower() == "close":
            self.close()
        ctype = r.getheader("Content-Type", "")
        payload = json.loads(raw) if ctype.startswith("application/json") and raw else raw.decode(errors="replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, payload


def run_load(http: Http, requests: list[tuple[str, str, dict, dict]], clients: int) -> dict:
    """Send ``requests`` ((method, path, body, headers) each) from ``clients`` threads as
    fast as they are answered. Returns latencies (ms), statuses, bodies, wall seconds."""
    results: list = [None] * len(requests)
    nxt = iter(range(len(requests)))
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker():
        barrier.wait()
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                break
            method, path, body, headers = requests[i]
            t = time.perf_counter()
            try:
                status, _h, payload = http.request(method, path, body, headers)
            except Exception as exc:  # noqa: BLE001 - counted as an error
                status, payload = "exception", repr(exc)
            results[i] = ((time.perf_counter() - t) * 1000, status, payload)
        http.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"wall": wall, "results": results}


# --- wrk, when it is installed (make bench installs it) ------------------------------------------

WRK_AWARD = r"""
-- One award per request: a random customer and amount, a new Idempotency-Key each
-- (run id, thread number, counter). Counts the answers and sums points_awarded.
counter, ok, other, points, first_other, answers = 0, 0, 0, 0, "", {}
local customers, key, day, run

function setup(thread)
  nthreads = (nthreads or 0) + 1
  thread:set("tid", nthreads)
  threads = threads or {}
  table.insert(threads, thread)
end

function init(args)
  customers, key, day, run = tonumber(args[1]), args[2], args[3], args[4]
  math.randomseed(tonumber(args[5]) + tid)
end

function request()
  counter = counter + 1
  local body = string.format('{"customer_ref":"C-%06d","occurred_on":"%s","amount":"%d.%02d","quantity":%d}',
    math.random(1, customers), day, math.random(50, 3000), math.random(0, 99), math.random(1, 3))
  return wrk.format("POST", "/api/v1/transactions", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key, ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter}, body)
end

function response(status, headers, body)
  if status == 201 then
    ok = ok + 1
    local p = tonumber(string.match(body, '"points_awarded":%s*(%-?%d+)'))
    points = points + p
    answers[#answers + 1] = string.match(body, '"id":%s*"([%x-]+)"') .. " " .. p
  else
    other = other + 1
    if first_other == "" then
      first_other = string.gsub(status .. " " .. string.sub(body, 1, 200), '[^%w%s%.:,_-]', ' ')
    end
  end
end

function done(summary, latency, requests)
  local t_ok, t_other, t_points, first = 0, 0, 0, ""
  local out = os.getenv("WRK_ANSWERS") and io.open(os.getenv("WRK_ANSWERS"), "w")
  for _, thread in ipairs(threads) do
    if out then
      for _, line in ipairs(thread:get("answers")) do out:write(line, "\n") end
    end
    t_ok = t_ok + thread:get("ok")
    t_other = t_other + thread:get("other")
    t_points = t_points + thread:get("points")
    if first == "" then first = thread:get("first_other") end
  end
  if out then out:close() end
  io.write(string.format('RESULT {"ok": %d, "other": %d, "points": %d, "first_other": "%s", ', t_ok, t_other,
    t_points, first))
  io.write(string.format('"requests": %d, "seconds": %.3f, "socket_errors": %d, ', summary.requests,
    summary.duration / 1e6, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
  io.write(string.format('"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f}\n',
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
"""

WRK_BARE = WRK_AWARD.replace('"/api/v1/transactions"', '"/bare"').replace(
    "local p = tonumber(string.match(body, '\"points_awarded\":%s*(%-?%d+)'))", "local p = 0").replace(
    "answers[#answers + 1] = string.match(body, '\"id\":%s*\"([%x-]+)\"') .. \" \" .. p", "")


# The app's fixed cost per API request, served: the award's request without its amount, which
# the JSON schema refuses (422) after the API key, the tenant and the idempotency key were
# checked; nothing is written.
WRK_REFUSED = WRK_BARE.replace('"/bare"', '"/api/v1/transactions"').replace(
    '"amount":"%d.%02d",', "").replace("math.random(50, 3000), math.random(0, 99), ", "").replace(
    "if status == 201 then", "if status == 422 then")


def have_wrk() -> bool:
    import shutil

    return shutil.which("wrk") is not None


def run_wrk(base: str, script: str, args: list[str], seconds: float, clients: int, threads: int = 2) -> dict:
    """``wrk`` for ``seconds`` with ``clients`` keep-alive connections on ``threads`` threads,
    the Lua ``script`` making each request; its RESULT line, parsed."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    answers_path = f.name + ".answers"
    try:
        cmd = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{round(seconds)}s", "--timeout", "30s",
               "-s", f.name, base, "--", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120,
                             env={**os.environ, "WRK_ANSWERS": answers_path})
        answers = {}
        if os.path.exists(answers_path):
            for line in Path(answers_path).read_text().splitlines():
                tx_id, points = line.split()
                answers[tx_id] = int(points)
    finally:
        os.unlink(f.name)
        if os.path.exists(answers_path):
            os.unlink(answers_path)
    m = re.search(r"^RESULT (\{.*\})$", out.stdout, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"wrk said:\n{out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["answers"] = answers  # transaction id -> points_awarded, of every 201
    r["rps"] = round(r["requests"] / r["seconds"], 1)
    r["errors"] = r["other"] + r["socket_errors"]
    return r


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summarize(load: dict, ok_status: int) -> dict:
    ms = [r[0] for r in load["results"]]
    statuses = Counter(str(r[1]) for r in load["results"])
    errors = sum(n for s, n in statuses.items() if s != str(ok_status))
    return {"requests": len(ms), "seconds": round(load["wall"], 2), "rps": round(len(ms) / load["wall"], 1),
            "p50": round(percentile(ms, 50), 2), "p90": round(percentile(ms, 90), 2),
            "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2), "mean": round(statistics.fmean(ms), 2),
            "errors": errors, "statuses": dict(statuses)}


# --- the data ----------------------------------------------------------------------------------

def prepare(overrides: dict, customers: int, log=print) -> dict:
    """The database of ``overrides`` (fresh: a new SQLite file or PostgreSQL cluster),
    migrated, with one hotel tenant, ``customers`` customers (refs C-000001 ...) and an API key."""
    from saas import create_app
    from saas.auth import services as auth_services
    from saas.customers.models import Customer
    from saas.db import bind_tenant
    from saas.migrate import upgrade
    from saas.settings import services as settings_services

    upgrade(overrides)
    app = create_app(overrides)
    db = app.extensions["huitou_db"]
    s = db.new_session()
    try:
        tenant, owner = auth_services.create_tenant(
            s, name="Bench Hotel", industry="hotel", owner_name="Bench Owner", owner_email="bench-owner@example.com",
            password=OWNER_PASSWORD, language="en")
        s.commit()
        bind_tenant(s, tenant.id, owner.id)
        _key, full = settings_services.create_api_key(s, "bench", owner.id)
        s.add_all([Customer(name=f"客户{i}", external_ref=customer_ref(i)) for i in range(1, customers + 1)])
        s.commit()
        info = {"tenant_id": tenant.id, "slug": tenant.slug, "timezone": tenant.timezone, "key": full,
                "overrides": overrides}
    finally:
        s.close()
        db.engine.dispose()
    log(f"prepared {overrides['DATABASE_URL']}: tenant {info['slug']}, {customers:,} customers")
    return info


def customer_ref(i: int) -> str:
    """The ref of the bench tenant's ``i``-th customer (from 1)."""
    return f"C-{i:06d}"


def award_requests(key: str, customers: int, n: int, rng: random.Random, day: str) -> list:
    auth = f"Bearer {key}"
    out = []
    for _ in range(n):
        body = {"customer_ref": customer_ref(rng.randint(1, customers)), "occurred_on": day,
                "amount": f"{rng.randint(50, 3000)}.{rng.randint(0, 99):02d}", "quantity": rng.randint(1, 3)}
        out.append(("POST", "/api/v1/transactions", body, {"Authorization": auth, "Idempotency-Key": uuid.uuid4().hex}))
    return out


def verify_ledger(overrides: dict, answers: dict[str, int], in_flight_bound: int) -> dict:
    """The ledger after the load: ``ledger.verify`` per tenant (every cached balance ==
    the sum of its entries); every answered transaction (``answers``: id -> the
    ``points_awarded`` of its 201) exists and its earn entries sum to exactly what the
    answer said; the transactions without an answer are the requests still in flight
    when the load generator stopped (at most ``in_flight_bound``), each credited once."""
    from sqlalchemy import and_, func, select

    from saas import create_app
    from saas.auth.models import Tenant
    from saas.customers.models import Transaction
    from saas.db import bind_tenant
    from saas.loyalty import ledger
    from saas.loyalty.models import LedgerEntry, LoyaltyAccount

    app = create_app(overrides)
    db = app.extensions["huitou_db"]
    out = {"mismatches": [], "accounts": 0, "entries": 0, "ledger_sum": 0, "transactions": 0}
    credited: dict[str, tuple[int, int]] = {}  # transaction id -> (earn points, earn entries)
    s = db.new_session(read_only=True)
    try:
        tenant_ids = list(s.scalars(select(Tenant.id)))
    finally:
        s.close()
    for tid in tenant_ids:
        s = db.new_session(read_only=True)
        try:
            bind_tenant(s, tid)
            out["mismatches"] += [(str(c), a, b) for c, a, b in ledger.verify(s)]
            out["accounts"] += s.scalar(select(func.count()).select_from(LoyaltyAccount))
            out["entries"] += s.scalar(select(func.count()).select_from(LedgerEntry))
            out["ledger_sum"] += int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0))))
            rows = s.execute(select(Transaction.id, func.coalesce(func.sum(LedgerEntry.points), 0),
                                    func.count(LedgerEntry.id))
                             .outerjoin(LedgerEntry, and_(LedgerEntry.transaction_id == Transaction.id,
                                                          LedgerEntry.tenant_id == Transaction.tenant_id,
                                                          LedgerEntry.kind == "earn"))
                             .group_by(Transaction.id)).all()
            credited.update({str(i): (int(p), n) for i, p, n in rows})
        finally:
            s.close()
    db.engine.dispose()
    out["transactions"] = len(credited)
    out["answered"] = len(answers)
    out["answered_points"] = sum(answers.values())
    out["wrong_answers"] = [(i, p, credited.get(i)) for i, p in answers.items()
                            if i not in credited or credited[i][0] != p][:5]
    out["credited_twice"] = [i for i, (_p, n) in credited.items() if n > 1][:5]
    out["unanswered"] = len(set(credited) - set(answers))
    out["exact"] = (not out["mismatches"] and not out["wrong_answers"] and not out["credited_twice"]
                    and out["unanswered"] <= in_flight_bound)
    return out


# --- the bare route ------------------------------------------------------------------------------

def bare_app():
    """A Flask app with one route that reads a JSON body and answers JSON: the floor of
    what Flask + gunicorn cost on this machine (gunicorn: ``bench.award:bare_app()``)."""
    from flask import Flask, request

    app = Flask("bare")

    @app.post("/bare")
    def bare():
        body = request.get_json()
        return {"ok": True, "customer_ref": body.get("customer_ref")}, 201

    @app.get("/")
    def index():
        return "ok"

    return app


# --- where the time goes -----------------------------------------------------------------------------

# (label, module path, attribute): functions timed inclusively, by wrapping the module
# attribute the callers look up at call time. Nested phases are indented in the label.
PHASES = [
    ("JSON body read + schema validation", "saas.api.spec", "ApiSpec.read_body"),
    ("API key and tenant (api_key_and_tenant)", "saas.settings.services", "api_key_and_tenant"),
    ("idempotency record lookup", "saas.api.idempotency", "_stored"),
    ("customer by ref", "saas.api.customers", "_customer_by_ref"),
    ("default transaction kind", "saas.customers.services", "default_kind"),
    ("record_transaction (validate, insert)", "saas.customers.services", "record_transaction"),
    ("loyalty award (services.award), of which:", "saas.loyalty.services", "award"),
    ("  programme_of (read + cache)", "saas.loyalty.services", "programme_of"),
    ("  lock_account", "saas.loyalty.ledger", "lock_account"),
    ("  refresh_tier (tier review / upgrade)", "saas.loyalty.ledger", "refresh_tier"),
    ("  idempotency of the entry (_existing)", "saas.loyalty.ledger", "_existing"),
    ("  credit the lot (_credit)", "saas.loyalty.ledger", "_credit"),
    ("commit (Session.commit)", "sqlalchemy.orm", "Session.commit"),
]


class _Phases:
    """Inclusive wall time of PHASES and of the SQL statements (cursor execute) per request."""

    def __init__(self, engine):
        import importlib

        from sqlalchemy import event

        self.totals: Counter = Counter()
        self.sql_ms = 0.0
        self.statements: Counter = Counter()
        self.undo = []
        for label, module, attr in PHASES:
            mod = importlib.import_module(module)
            owner, name = (getattr(mod, attr.split(".")[0]), attr.split(".")[1]) if "." in attr else (mod, attr)
            original = getattr(owner, name)
            setattr(owner, name, self._timed(label, original))
            self.undo.append((owner, name, original))
        self._t0: dict = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        self.engine = engine

    def _timed(self, label, fn):
        totals = self.totals

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - t
        return wrapper

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._t0[id(cursor)] = time.perf_counter()
        self.statements[statement.split(None, 1)[0].upper()] += 1

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.sql_ms += (time.perf_counter() - self._t0.pop(id(cursor), time.perf_counter())) * 1000

    def close(self):
        from sqlalchemy import event

        for owner, name, original in self.undo:
            setattr(owner, name, original)
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def profile(info: dict, customers: int, n: int, rng: random.Random, day: str) -> dict:
    """In-process: ``n`` awards through the Flask test client, one at a time. The plain
    mean time per award (nothing measured inside) is the ceiling of a database whose
    writers are serialised (SQLite: 1 / mean); then the same again with the phases timed
    (inclusive wall time of the functions in PHASES, and of the SQL statements)."""
    from saas import create_app

    app = create_app({**info["overrides"], "TESTING": True})
    client = app.test_client()

    def send(count, expect=201, drop=()):
        """``count`` awards, one at a time; ms each. ``drop``: fields taken out of the body
        (``expect=422, drop=("amount",)``: an authenticated request the schema refuses,
        the app's fixed cost per API request)."""
        times = []
        for _m, path, body, headers in award_requests(info["key"], customers, count, rng, day):
            for name in drop:
                body.pop(name)
            t = time.perf_counter()
            r = client.post(path, json=body, headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code != expect:
                raise RuntimeError(f"profile: {r.status_code} {r.text[:300]}")
        return times

    send(50)  # warm-up
    plain = send(n)
    floor = send(n, expect=422, drop=("amount",))
    # How long each award holds SQLite's write lock: from its turn in the writers' queue
    # (BEGIN IMMEDIATE, where its writes begin) to COMMIT.
    from saas.db import _QueuedWriters

    held, began = [0.0], {}
    wait_turn, end_turn = _QueuedWriters.wait_turn, _QueuedWriters.end_turn

    def timed_wait(self):
        wait_turn(self)
        began[id(self)] = time.perf_counter()

    def timed_end(self):
        if self._queued:
            held[0] += time.perf_counter() - began.pop(id(self), time.perf_counter())
        end_turn(self)

    _QueuedWriters.wait_turn, _QueuedWriters.end_turn = timed_wait, timed_end
    try:
        locked = send(n)
    finally:
        _QueuedWriters.wait_turn, _QueuedWriters.end_turn = wait_turn, end_turn
    phases = _Phases(app.extensions["huitou_db"].engine)
    try:
        timed = send(n)
    finally:
        phases.close()
    app.extensions["huitou_db"].engine.dispose()
    total = statistics.fmean(timed)
    rows = [(label, round(1000 * phases.totals[label] / n, 2)) for label, _m, _a in PHASES]
    return {
        "requests": n,
        "plain_mean_ms": round(statistics.fmean(plain), 2),
        "plain_p50_ms": round(percentile(plain, 50), 2),
        "timed_mean_ms": round(total, 2),
        "sql_ms": round(phases.sql_ms / n, 2),
        "ceiling_rps": round(1000 / statistics.fmean(plain), 0),
        "floor_ms": round(statistics.fmean(floor), 2),
        "lock_ms": round(1000 * held[0] / len(locked), 2),
        "cores": os.cpu_count(),
        "phases": rows,
        "queries": {k: round(v / n, 1) for k, v in phases.statements.most_common()}
        | {"total": round(sum(phases.statements.values()) / n, 1)},
    }


# --- the run --------------------------------------------------------------------------------------

def run(db_path: Path, customers: int = 1000, requests: int = 3000, clients: int = 16, workers: int = 4,
        threads: int = 1, warmup: int = 200, profile_requests: int = 300, seed: int = 2026, seconds: float = 20,
        use_wrk: bool | None = None, database: str = "sqlite", log=print) -> dict:
    """The award API and the bare route under the same load: with wrk (when installed,
    ``seconds`` of load after a 3-second warm-up) or else the Python client (``requests``
    after ``warmup``)."""
    with _database(db_path, database) as overrides:
        return _run(overrides, database, customers, requests, clients, workers, threads, warmup, profile_requests,
                    seed, seconds, use_wrk, log)


@contextlib.contextmanager
def _database(db_path: Path, database: str):
    """The app settings of a fresh database: a new SQLite file at ``db_path``, or a
    throw-away PostgreSQL 15 cluster on loopback (tests/pg.py: the schema owner migrates,
    the app connects as the role row-level security applies to)."""
    if database == "sqlite":
        from saas.db import remove_sqlite_files

        remove_sqlite_files(db_path)
        yield server_overrides(f"sqlite:///{db_path}")
        return
    from tests import pg

    server = pg.start()
    try:
        yield server_overrides(server.app_url, MIGRATION_DATABASE_URL=server.owner_url,
                               DATABASE_APP_ROLE="huitou_app")
    finally:
        server.stop()


def _run(overrides, database, customers, requests, clients, workers, threads, warmup, profile_requests, seed,
         seconds, use_wrk, log) -> dict:
    from saas import clock

    rng = random.Random(seed)
    info = prepare(overrides, customers, log)
    day = clock.today(info["timezone"]).isoformat()
    logs = ROOT / "instance" / "bench-award-logs"
    use_wrk = have_wrk() if use_wrk is None else use_wrk
    out: dict = {"database": database, "customers": customers, "clients": clients, "workers": workers,
                 "threads": threads,
                 "client": (f"wrk, {clients} keep-alive connections on 2 threads, {seconds:g} s after a 3 s warm-up"
                            if use_wrk else f"Python http.client, {clients} threads, keep-alive, one process")}
    run_id = uuid.uuid4().hex[:12]

    def load_with(served: Served, script: str, name: str) -> dict:
        """(warm-up, measured) with wrk; the measured run with its CPU per request."""
        args = [str(customers), info["key"], day]
        warm = run_wrk(served.url, script, args + [f"{run_id}-{name}-warm", str(seed)], 3, clients)
        return warm, with_cpu(served.pid, lambda: run_wrk(served.url, script, args + [f"{run_id}-{name}", str(seed + 1)],
                                                          seconds, clients))

    # The award API.
    spec = app_spec(info["overrides"])
    log(f"== award API: gunicorn {workers} workers x {threads} threads, {out['client']}")
    with serve(spec, logs / "award-server.log", workers=workers, threads=threads,
               probe="/api/v1/openapi.json") as served:
        if use_wrk:
            warm, load = load_with(served, WRK_AWARD, "award")
        else:
            http = Http(served.url)
            warm = run_load(http, award_requests(info["key"], customers, warmup, rng, day), clients)
            reqs = award_requests(info["key"], customers, requests, rng, day)
            load = with_cpu(served.pid, lambda: {**run_load(http, reqs, clients), "requests": len(reqs)})
        log("== the same server: the award's request without its amount (422 from the schema, nothing written)")
        if use_wrk:
            _warm, refused = load_with(served, WRK_REFUSED, "refused")
            out["refused"] = _figures(refused)
        else:
            reqs = [(m, u, {k: v for k, v in body.items() if k != "amount"}, h)
                    for m, u, body, h in award_requests(info["key"], customers, requests, rng, day)]
            out["refused"] = with_cpu(served.pid, lambda: summarize(run_load(http, reqs, clients), 422))
    if use_wrk:
        answers = {**warm["answers"], **load["answers"]}
        out["award"] = _figures(load)
        out["award"]["statuses"] = {"201": load["ok"], "other": load["other"], "socket errors": load["socket_errors"]}
        out["award"]["warmup_errors"] = warm["errors"]
        out["award"]["sample_errors"] = [load["first_other"]] if load["first_other"] else []
    else:
        answers = {r[2]["id"]: r[2]["points_awarded"] for r in warm["results"] + load["results"] if r[1] == 201}
        out["award"] = {**summarize(load, 201), **{k: load[k] for k in CPU_KEYS}}
        out["award"]["warmup_errors"] = sum(1 for r in warm["results"] if r[1] != 201)
        out["award"]["sample_errors"] = [r[2] for r in load["results"] if r[1] != 201][:3]
    out["award"]["server_problems"] = server_problems(logs / "award-server.log")[:10]
    log(f"   {out['award']}")

    # The bare route, served the same way, the same load.
    log("== bare Flask route, served the same way")
    with serve("bench.award:bare_app()", logs / "bare-server.log", workers=workers, threads=threads,
               probe="/") as served:
        if use_wrk:
            _warm, bare = load_with(served, WRK_BARE, "bare")
            out["bare"] = _figures(bare)
        else:
            http = Http(served.url)
            bare_reqs = [("POST", "/bare", b, {"Authorization": h["Authorization"],
                                                "Idempotency-Key": h["Idempotency-Key"]})
                         for _m, _p, b, h in award_requests(info["key"], customers, requests + warmup, rng, day)]
            run_load(http, bare_reqs[:warmup], clients)
            out["bare"] = with_cpu(served.pid, lambda: summarize(run_load(http, bare_reqs[warmup:], clients), 201))
    log(f"   {out['bare']}")
    if database == "sqlite":
        out["raw_sql"] = _raw_sql_target(info, _sqlite_path(overrides), customers, clients, workers, threads, rng, day,
                                         logs, load_with if use_wrk else None, requests, warmup, log)
    out["ratio_rps"] = round(out["bare"]["rps"] / max(out["award"]["rps"], 1e-9), 1)
    out["ratio_p50"] = round(out["award"]["p50"] / max(out["bare"]["p50"], 1e-9), 1)

    log("== ledger verification")
    # wrk stops with up to one request per connection in flight, in each of its two runs.
    out["ledger"] = verify_ledger(info["overrides"], answers, 2 * clients if use_wrk else 0)
    log(f"   {out['ledger']}")

    log(f"== in-process profile of {profile_requests} awards (Flask test client, one at a time)")
    out["profile"] = profile(info, customers, profile_requests, rng, day)
    log(f"   mean {out['profile']['plain_mean_ms']} ms per award; {out['profile']['queries']}")
    for label, ms in out["profile"]["phases"]:
        log(f"   {label:48} {ms:8.2f} ms")
    log(f"   {'SQL executing in the database driver':48} {out['profile']['sql_ms']:8.2f} ms")
    return out


def _sqlite_path(overrides: dict) -> Path:
    """The file of the SQLite database the settings ``overrides`` name."""
    return Path(overrides["DATABASE_URL"].removeprefix("sqlite:///"))


def _raw_sql_target(info, db_path: Path, customers, clients, workers, threads, rng, day, logs, load_with,
                    requests, warmup, log) -> dict:
    """The award's own SQL replayed on the raw driver in a bare route (bench/award_sql.py),
    on a copy of the database, served and loaded like the award API."""
    from bench import award_sql

    copy = db_path.with_name(db_path.stem + "-raw-sql.db")
    award_sql.copy_database(db_path, copy)
    recorded = copy.with_suffix(".json")
    log("== the award's SQL on the raw driver: recording 300 awards, then replaying them in a bare route")
    prime = [(m, url, {**body, "customer_ref": customer_ref(i)}, headers) for i, (m, url, body, headers)
             in enumerate(award_requests(info["key"], customers, customers, rng, day), 1)]
    award_sql.capture({**info["overrides"], "DATABASE_URL": f"sqlite:///{copy}"}, prime,
                      award_requests(info["key"], customers, 300, rng, day), recorded)
    out = _raw_sql_load(f"bench.award_sql:raw_app({str(copy)!r}, {str(recorded)!r})", logs / "raw-sql-server.log",
                        "raw-sql", info, customers, clients, workers, threads, rng, day, load_with, requests, warmup)
    log(f"   {out}")
    group_threads = max(threads, 4)
    log(f"== the same, the writes of each worker's awards grouped into one transaction ({group_threads} threads "
        "per worker)")
    out["group_commit"] = _raw_sql_load(
        f"bench.award_sql:raw_app({str(copy)!r}, {str(recorded)!r}, group_commit=True)",
        logs / "raw-sql-group-server.log", "raw-sql-group", info, customers, clients, workers, group_threads, rng,
        day, load_with, requests, warmup)
    out["group_commit"]["threads"] = group_threads
    log(f"   {out['group_commit']}")
    return out


def _raw_sql_load(spec, log_path, name, info, customers, clients, workers, threads, rng, day, load_with, requests,
                  warmup) -> dict:
    """``spec`` (a raw-SQL replay app) served and loaded like the award API; with the
    replay's group-commit counters of one worker, when it has them."""
    with serve(spec, log_path, workers=workers, threads=threads, probe="/") as served:
        if load_with is not None:
            _warm, raw = load_with(served, WRK_BARE, name)
            out = _figures(raw)
        else:
            http = Http(served.url)
            reqs = [("POST", "/bare", b, {}) for _m, _p, b, _h in award_requests(info["key"], customers,
                                                                                  requests + warmup, rng, day)]
            run_load(http, reqs[:warmup], clients)
            out = with_cpu(served.pid, lambda: summarize(run_load(http, reqs[warmup:], clients), 201))
        # Each answer is one worker's; ask until most have answered (a new connection each).
        workers_seen = {}
        for _ in range(8 * workers):
            with urllib.request.urlopen(served.url + "/batches", timeout=10) as r:
                counts = json.loads(r.read())
            workers_seen[counts["pid"]] = counts
        batches = sum(c["batches"] for c in workers_seen.values())
        if batches:
            out["awards_per_batch"] = round(sum(c["awards"] for c in workers_seen.values()) / batches, 1)
    out["server_problems"] = server_problems(log_path)[:10]
    return out


def render(r: dict) -> list[str]:
    a, b, led, prof = r["award"], r["bare"], r["ledger"], r["profile"]
    goal_ok = a["rps"] >= 1500 and a["p99"] < 100 and a["errors"] == 0
    out = [f"### Award-points API under gunicorn (issue 4), {'SQLite' if r['database'] == 'sqlite' else 'PostgreSQL'}", "",
           (f"{'SQLite file' if r['database'] == 'sqlite' else 'PostgreSQL 15 on the same machine (the app as the role row-level security applies to)'}, "
            f"one hotel tenant (preset programme) with {r['customers']:,} customers; "
           f"gunicorn {r['workers']} workers x {r['threads']} threads (gthread, `--preload`) on 127.0.0.1; "
           f"load generator: {r['client']}, on the same machine. "
           f"`POST /api/v1/transactions` with a new Idempotency-Key each, a random customer and amount; "
           f"the bare route is a Flask `POST` that parses the JSON body and answers JSON, served the same way "
           f"with the same load. Milliseconds at the client."), "",
           "| target | requests | seconds | requests/s | p50 | p90 | p99 | max | errors | CPU ms per request: server, load generator, rest | cores busy |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    targets = [("`POST /api/v1/transactions` (award)", a), ("bare Flask route", b)]
    if r.get("refused"):
        targets.insert(1, ("the same request without its amount: 422 from the schema, nothing written",
                           r["refused"]))
    if r.get("raw_sql"):
        targets.append(("bare route replaying an award's SQL on the raw driver", r["raw_sql"]))
        if r["raw_sql"].get("group_commit"):
            g = r["raw_sql"]["group_commit"]
            targets.append((f"the same, each worker's writes grouped into one transaction ({g['threads']} threads "
                            f"per worker; {g.get('awards_per_batch', '?')} awards per transaction)", g))
    for name, st in targets:
        cpu = (f"{st['cpu_server_ms']:.2f}, {st['cpu_client_ms']:.2f}, {st['cpu_other_ms']:.2f}"
               if "cpu_server_ms" in st else "")
        out.append(f"| {name} | {st['requests']:,} | {st['seconds']} | **{st['rps']:,}** | {st['p50']} | {st['p90']} "
                   f"| {st['p99']} | {st['max']} | {st['errors']} | {cpu} | {st.get('cores_busy', '')} |")
    out += ["", (f"Ratio: the bare route serves x{r['ratio_rps']} the requests per second; award p50 is "
            f"x{r['ratio_p50']} the bare p50. Goal (on SQLite: >= 1,500 awards/s, p99 < 100 ms, no errors): "
            f"**{'met' if goal_ok else 'not met'}**."), ""]
    if "cpu_server_ms" in a:
        cores = os.cpu_count() or 1
        spent = a["cpu_server_ms"] + a["cpu_client_ms"] + a["cpu_other_ms"]
        out += [(f"CPU, measured from /proc over the loaded seconds: per award the server (gunicorn's master and "
                 f"workers) used {a['cpu_server_ms']:.2f} ms, the load generator {a['cpu_client_ms']:.2f} ms and "
                 f"the rest of the machine {a['cpu_other_ms']:.2f} ms, {spent:.2f} ms in all, with "
                 f"{a['cores_busy']} of {cores} cores busy on average. At 1,500 awards/s these {cores} cores "
                 f"allow {cores * 1000 / 1500:.2f} ms of CPU per award for everything on the machine; "
                 f"the award takes {spent / (cores * 1000 / 1500):.1f} times that now"
                 + (f"; the bare route takes {b['cpu_server_ms'] + b['cpu_client_ms'] + b['cpu_other_ms']:.2f} ms"
                    if "cpu_server_ms" in b else "")
                 + (f", and the same request refused by the schema before any write (422, the second row) "
                    f"{r['refused']['cpu_server_ms'] + r['refused']['cpu_client_ms'] + r['refused']['cpu_other_ms']:.2f} ms: "
                    f"the app's fixed cost of an API request, served"
                    if "cpu_server_ms" in r.get("refused", {}) else "") + "."), ""]
    if r.get("raw_sql"):
        raw = r["raw_sql"]
        out += [(f"The last row is the ceiling of this stack on this machine: the bare route replaying, per "
                 f"request, the SQL statements one award sent to the driver (recorded from the app, the same "
                 f"order, pragmas and writers' queue, new ids; bench/award_sql.py) on Python's `sqlite3`, with "
                 f"none of the app's own Python. It serves x{raw['rps'] / max(a['rps'], 1e-9):.1f} the awards "
                 f"per second of the app"
                 + (f"; errors: {raw['errors']}, server log: {raw['server_problems'][:2]}"
                    if raw["errors"] or raw["server_problems"] else "")
                 + ". (Recorded once every customer had its loyalty account: a little less work than "
                   "the award run, where first awards create accounts.)"), ""]
    if a["errors"]:
        out.append(f"Award errors by status: {a['statuses']}; first: {a['sample_errors']}.")
    out.append("Server log problems (tracebacks, `database is locked`, worker timeouts): "
               + (f"{len(a['server_problems'])}: {a['server_problems'][:3]}" if a["server_problems"] else "none") + ".")
    out += ["", (f"Ledger afterwards: `ledger.verify` per tenant: {len(led['mismatches'])} mismatches over "
            f"{led['accounts']:,} accounts and {led['entries']:,} entries; each of the {led['answered']:,} answered "
            f"transactions credited exactly the `points_awarded` of its answer (sum {led['answered_points']:,}): "
            f"{len(led['wrong_answers'])} wrong; credited twice: {len(led['credited_twice'])}; "
            f"{led['unanswered']} transactions without an answer (in flight when the load generator stopped), "
            f"each credited once. **{'exact' if led['exact'] else 'NOT EXACT'}**."), "",
            (f"Where the time goes (in-process, Flask test client, one award at a time, {prof['requests']} "
             f"requests): **{prof['plain_mean_ms']} ms per award** (p50 {prof['plain_p50_ms']} ms); "
             f"{prof['queries'].get('total')} SQL statements per award "
             f"({', '.join(f'{k} {v}' for k, v in prof['queries'].items() if k != 'total')}) taking "
             f"{prof['sql_ms']} ms in the database driver. "
             + (f"An award reads first (key, tenant, idempotency record, "
                f"customer, kind, programme) and holds SQLite's write lock only for its writes: "
                f"**{prof['lock_ms']} ms per award** from its turn in the writers' queue to COMMIT, so at most "
                f"~{1000 / max(prof['lock_ms'], 1e-9):,.0f} awards/s could be serialised; the whole award is CPU "
                f"in one process, so on {prof['cores']} cores at most "
                f"~{prof['cores'] * 1000 / prof['plain_mean_ms']:,.0f} awards/s, before the server and the load "
                f"generator take their share. "
                if r["database"] == "sqlite" else
                "On PostgreSQL awards to different customers do not wait for one another (the customer's row "
                "is locked, not the database); the time in the driver is mostly the round trips to the "
                "server, which shares the cores with the app and the load generator. ")
             + f"For scale: an "
             f"authenticated API request that the schema refuses (422, no database write) costs "
             f"**{prof['floor_ms']} ms** the same way: the app's fixed cost per API request (session, API key "
             f"and tenant, Babel, JSON schema, error body)."),
            "",
            f"| phase (inclusive wall time, timed run: {prof['timed_mean_ms']} ms per award) | ms per award |",
            "| --- | ---: |"]
    for label, ms in prof["phases"]:
        out.append(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {ms} |")
    rest = prof["timed_mean_ms"] - sum(ms for label, ms in prof["phases"] if not label.startswith(" "))
    out.append(f"| everything else (Flask and the test client, the idempotency claim and stored answer, the "
               f"tenant row, JSON out) | {rest:.2f} |")
    engine_name = "SQLite" if r["database"] == "sqlite" else "the PostgreSQL driver (round trips included)"
    out.append(f"| SQL statements executing in {engine_name} (all phases) | {prof['sql_ms']} |")
    out.append("")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.award", description=__doc__.splitlines()[0])
    p.add_argument("--db", default=str(ROOT / "instance" / "bench-award.db"))
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20, help="seconds of load with wrk")
    p.add_argument("--python-client", action="store_true", help="the Python load generator even when wrk is there")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = p.parse_args(argv)
    r = run(Path(args.db).resolve(), args.customers, args.requests, args.clients, args.workers, args.threads,
            seconds=args.seconds, use_wrk=False if args.python_client else None, database=args.database)
    print("\n".join(render(r)))


if __name__ == "__main__":
    sys.exit(main())

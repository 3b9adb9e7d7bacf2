"""Guest-card / customer search, server side, for the HTMX partial (issue 3, "Performance").

Builds the app on a generated database, logs in as the owner of the tenant with the most
customers through Flask's test client, and times ``GET /customers?q=...`` with
``HX-Request: true`` (and ``GET /frontdesk?q=...`` when that route exists) for realistic
queries: 4-digit phone fragments, 1-2 character name prefixes, card numbers, plate
numbers. The same client times a bare Flask app with one route returning a fixed string,
for the ratio. The SQL of each query kind is captured with a ``before_cursor_execute``
event and its ``EXPLAIN QUERY PLAN`` printed, with the indexes it uses.

    .venv/bin/python -m bench.search --db instance/bench-full.db
"""
from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import event, text

from bench.generate import OWNER_PASSWORD

def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def stats(ms: list[float]) -> dict:
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
            "p99": round(percentile(ms, 99), 2), "mean": round(statistics.fmean(ms), 2)}


def biggest_tenant(conn) -> dict:
    row = conn.execute(text(
        "SELECT t.id, t.slug, t.industry, COUNT(*) AS n FROM customers c JOIN tenants t ON t.id = c.tenant_id "
        "GROUP BY t.id ORDER BY n DESC LIMIT 1")).one()
    owner = conn.execute(text(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id "
        "WHERE m.tenant_id = :t AND m.role = 'owner' LIMIT 1"), {"t": row.id}).scalar_one()
    return {"id": row.id, "slug": row.slug, "industry": row.industry, "customers": row.n, "owner_email": owner}


def make_queries(conn, tenant_id: str, rng: random.Random, per_kind: int) -> dict[str, list[str]]:
    """Realistic search strings drawn from the tenant's own customers."""
    sample = conn.execute(text(
        "SELECT name, phone, card_number, plate_number FROM customers WHERE tenant_id = :t "
        "ORDER BY id LIMIT 5000"), {"t": tenant_id}).all()
    rng.shuffle(sample := list(sample))
    phones = [r.phone for r in sample if r.phone]
    names = [r.name for r in sample if r.name and not r.name[0].isascii()]
    cards = [r.card_number for r in sample if r.card_number]
    plates = [r.plate_number for r in sample if r.plate_number]
    q: dict[str, list[str]] = {}

    def fragment(phone: str) -> str:
        digits = phone[3:] if phone.startswith("+86") else phone.lstrip("+")
        # front desks ask for the last four digits more often than any other part
        if rng.random() < 0.6:
            return digits[-4:]
        i = rng.randrange(0, len(digits) - 3)
        return digits[i:i + 4]

    q["phone, 4 digits (any part)"] = [fragment(rng.choice(phones)) for _ in range(per_kind)]
    q["phone, full national number"] = [rng.choice(phones)[3:] for _ in range(per_kind)]
    q["name prefix, 1 character"] = [rng.choice(names)[:1] for _ in range(per_kind)]
    q["name prefix, 2 characters"] = [rng.choice(names)[:2] for _ in range(per_kind)]
    if cards:
        q["card number"] = [rng.choice(cards) for _ in range(per_kind)]
    if plates:
        q["plate number"] = [rng.choice(plates) for _ in range(per_kind)]
    q["no match"] = [rng.choice(["赵钱孙李周", "Zzyzx", "0000000000000", "ABC-99999"]) for _ in range(per_kind)]
    return q


class SqlCapture:
    def __init__(self, engine):
        self.engine = engine
        self.active = False
        self.statements: list[tuple[str, object]] = []
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, conn, cursor, statement, parameters, context, executemany):
        if self.active and statement.lstrip().upper().startswith("SELECT") and "customers" in statement:
            self.statements.append((statement, parameters))

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._on)


def explain(engine, statement: str, parameters) -> list[str]:
    with engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        rows = dbapi.execute("EXPLAIN QUERY PLAN " + statement, parameters or ()).fetchall()
    return [r[-1] for r in rows]


def time_requests(client, path: str, queries: list[str], headers: dict, warmup: int = 5):
    """Wall-clock and CPU milliseconds of each request (the test client runs the app in
    this thread, so thread CPU time is the server's CPU time; on a busy machine the wall
    clock also counts time spent waiting for a core), and the response sizes."""
    for qs in queries[:warmup]:
        client.get(path, query_string={"q": qs}, headers=headers)
    times, cpu, sizes = [], [], []
    for qs in queries:
        c = time.thread_time()
        t = time.perf_counter()
        r = client.get(path, query_string={"q": qs}, headers=headers)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - c) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}?q={qs} answered {r.status_code}")
        sizes.append(len(r.data))
    return times, cpu, sizes


PLAN_RE = re.compile(r"^(SEARCH|SCAN) (\w+)(?: USING (?:COVERING )?INDEX (\w+))?(?: \((.*)\))?")


def plan_verdict(line: str) -> str | None:
    """What a plan line does with the customers table: a seek on a search column, a scan of
    the tenant's rows, or a scan of the whole table."""
    m = PLAN_RE.match(line.strip())
    if not m or m.group(2) != "customers":
        return None
    op, _, index, cond = m.groups()
    if op == "SCAN":
        return f"full scan{' via ' + index if index else ''}"
    # "tenant_id=?", "plate_number>?", "<expr>>?" (an expression index such as lower(name))
    cols = [m.group(1) for c in (cond or "").split(" AND ") if (m := re.match(r"\s*(<expr>|\w+)", c))]
    if [c for c in cols if c and c != "tenant_id"]:
        return f"index seek {index} ({cond})"
    return f"scan of the tenant's rows via {index} (only tenant_id=? used)"


def bare_app():
    from flask import Flask

    app = Flask("bare")
    app.config["TESTING"] = True

    @app.route("/customers")
    def customers():
        return "<tr><td>王先生</td><td>+86 138****1234</td></tr>"

    return app


def run(url: str, per_kind: int = 200, seed: int = 7, log=print) -> dict:
    from saas import create_app
    from saas.db import get_db

    app = create_app({"DATABASE_URL": url, "TESTING": True, "WTF_CSRF_ENABLED": False,
                      "SECRET_KEY": "bench", "RATELIMIT_ENABLED": False})
    with app.app_context():
        engine = get_db().engine
    with engine.connect() as conn:
        tenant = biggest_tenant(conn)
        queries = make_queries(conn, tenant["id"], random.Random(seed), per_kind)
    log(f"tenant {tenant['slug']} ({tenant['industry']}): {tenant['customers']:,} customers; "
        f"{per_kind} requests per query kind")

    client = app.test_client()
    r = client.post("/login", data={"email": tenant["owner_email"], "password": OWNER_PASSWORD})
    if r.status_code not in (302, 303):
        raise RuntimeError(f"login as {tenant['owner_email']} failed: {r.status_code}")
    hx = {"HX-Request": "true"}
    paths = ["/customers"]
    if any(rule.rule == "/frontdesk" for rule in app.url_map.iter_rules()):
        paths.append("/frontdesk")

    results: dict = {"tenant": tenant, "paths": {}, "plans": {}}
    capture = SqlCapture(engine)
    for path in paths:
        per_path = results["paths"][path] = {}
        all_ms: list[float] = []
        all_cpu: list[float] = []
        for kind, qs in queries.items():
            # the SQL of this query kind, captured from one request
            capture.statements.clear()
            capture.active = True
            client.get(path, query_string={"q": qs[0]}, headers=hx)
            capture.active = False
            if path == "/customers" or kind not in results["plans"]:
                results["plans"][f"{path} {kind}"] = [
                    {"sql": stmt, "plan": explain(engine, stmt, params)} for stmt, params in capture.statements]
            ms, cpu, sizes = time_requests(client, path, qs, hx)
            all_ms += ms
            all_cpu += cpu
            per_path[kind] = stats(ms) | {"cpu": stats(cpu), "bytes_median": int(statistics.median(sizes))}
            st = per_path[kind]
            log(f"  {path:11} {kind:30} p50 {st['p50']:7.2f}  p95 {st['p95']:7.2f}  p99 {st['p99']:7.2f} ms"
                f"  (CPU p50 {st['cpu']['p50']:.2f}, p95 {st['cpu']['p95']:.2f})  {st['bytes_median']:,} bytes")
        per_path["all"] = stats(all_ms) | {"cpu": stats(all_cpu)}
    capture.close()

    # the same client machinery against a bare Flask route
    bare = bare_app().test_client()
    bare_ms, bare_cpu, _ = time_requests(bare, "/customers", [q for qs in queries.values() for q in qs], hx,
                                         warmup=50)
    results["bare"] = stats(bare_ms) | {"cpu": stats(bare_cpu)}
    log(f"  bare Flask route: p50 {results['bare']['p50']:.3f}  p95 {results['bare']['p95']:.3f}  "
        f"p99 {results['bare']['p99']:.3f} ms")
    for path, per_path in results["paths"].items():
        per_path["all"]["ratio_p50"] = round(per_path["all"]["p50"] / results["bare"]["p50"], 1)
        per_path["all"]["ratio_p95"] = round(per_path["all"]["p95"] / results["bare"]["p95"], 1)
        log(f"  {path} all queries: p50 {per_path['all']['p50']} ms, p95 {per_path['all']['p95']} ms "
            f"(x{per_path['all']['ratio_p95']} the bare route at p95)")

    log("\nQuery plans (EXPLAIN QUERY PLAN):")
    verdicts = {}
    shown = set()
    for kind, stmts in results["plans"].items():
        log(f"-- {kind}")
        for st in stmts:
            sql = re.sub(r"\s+", " ", st["sql"])
            where = sql[sql.find(" WHERE "):] if " WHERE " in sql else sql
            if sql not in shown:
                log(f"   SQL: ...{where[:600]}")
                shown.add(sql)
            for line in st["plan"]:
                log(f"     {line}")
                v = plan_verdict(line)
                if v:
                    verdicts.setdefault(kind, []).append(v)
    results["plan_verdicts"] = verdicts
    log("\nWhat the customers table sees per query kind:")
    for kind, vs in verdicts.items():
        log(f"  {kind}: {'; '.join(dict.fromkeys(vs))}")
    engine.dispose()
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    p.add_argument("--db", required=False, help="the generated SQLite file")
    p.add_argument("--database-url")
    p.add_argument("--requests", type=int, default=200, help="requests per query kind")
    args = p.parse_args(argv)
    url = args.database_url or f"sqlite:///{Path(args.db).resolve()}"
    run(url, args.requests)


if __name__ == "__main__":
    sys.exit(main())

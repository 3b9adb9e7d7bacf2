"""Run the benchmarks and record them in bench/RESULTS.md.

    .venv/bin/python -m bench                      # small size: generate, search, CDNOW import
    .venv/bin/python -m bench --size full          # 100 tenants, 1M customers, 10M transactions
    .venv/bin/python -m bench --size full --reuse  # search + import on an existing bench-full.db

Steps: ``bench.generate`` (a fresh SQLite database, default instance/bench-<size>.db),
``bench.search`` (the guest-card / customer search partial on the tenant with the most
customers), ``bench.import_cdnow`` (the CDNOW master file through the app's importer),
``bench.award`` (the award-points API under gunicorn with 4 workers, on its own fresh
SQLite file instance/bench-award.db, against a bare Flask route served the same way).
The figures of the run replace the section of the same date and size in RESULTS.md, or are
appended to it; the award step has a section of its own per date (it does not depend on
the size).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from bench import award, generate, import_cdnow, search

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    import sqlite3
    return {"platform": platform.platform(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "cpu": cpu, "cores": os.cpu_count(), "ram": ram}


def load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _ms(st: dict) -> str:
    return f"{st['p50']:.1f} / {st['p95']:.1f} / {st['p99']:.1f}"


def render(size: str, m: dict, gen: dict | None, srch: dict | None, imp: dict | None, loads: dict,
           today: dt.date) -> str:
    out = [f"<!-- run {today.isoformat()} {size} -->", f"## {today.isoformat()} — size `{size}`", ""]
    out.append(f"Machine: {m['platform']}; {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; "
               f"Python {m['python']}, SQLite {m['sqlite']}.")
    out.append("Load average (1/5/15 min) at the start of each step: "
               + "; ".join(f"{k} {v}" for k, v in loads.items())
               + f" (a load above {m['cores']} means other processes competed for the cores and the "
                 "wall-clock figures are inflated; the CPU figures are this process's own time).")
    out.append("")
    if gen:
        out += ["### Generator", "",
                f"{gen['tenants']} tenants, {gen['customers']:,} customers (tenant #1: {gen['big_tenant']:,}), "
                f"{gen['transactions']:,} transactions, history {gen['history']}, seed {gen['seed']}.", "",
                "| step | seconds |", "| --- | ---: |",
                f"| schema + tenants (create_tenant with presets) | {gen['seconds_tenants']} |",
                f"| bulk load ({gen['rows_per_second']:,} rows/s) | {gen['seconds_load']} |",
                f"| foreign key check + ANALYZE | {gen['seconds_analyze']} |",
                f"| **total** (goal for full: < 600) | **{gen['seconds_total']}** |",
                f"| process CPU time | {gen.get('cpu_seconds', '?')} |", ""]
    if srch:
        t = srch["tenant"]
        out += ["### Guest-card / customer search (HTMX partial, server side)", "",
                f"Tenant `{t['slug']}` ({t['industry']}, {t['customers']:,} customers), logged in as its owner "
                f"with Flask's test client; `HX-Request: true`; {srch['requests']} requests per query kind. "
                "Milliseconds, p50 / p95 / p99; wall clock and this thread's CPU time. Goal: p95 < 15 ms.", "",
                "| route | query kind | wall p50 / p95 / p99 | CPU p50 / p95 / p99 | median bytes |",
                "| --- | --- | ---: | ---: | ---: |"]
        for path, kinds in srch["paths"].items():
            for kind, st in kinds.items():
                if kind == "all":
                    continue
                out.append(f"| `{path}` | {kind} | {_ms(st)} | {_ms(st['cpu'])} | {st['bytes_median']:,} |")
            a = kinds["all"]
            out.append(f"| `{path}` | **all** | **{_ms(a)}** | **{_ms(a['cpu'])}** | |")
        b = srch["bare"]
        out.append(f"| bare Flask route | fixed string | {b['p50']:.2f} / {b['p95']:.2f} / {b['p99']:.2f} | "
                   f"{b['cpu']['p50']:.2f} / {b['cpu']['p95']:.2f} / {b['cpu']['p99']:.2f} | |")
        out.append("")
        for path, kinds in srch["paths"].items():
            a = kinds["all"]
            out.append(f"Ratio `{path}` / bare route: wall p50 x{a['ratio_p50']}, wall p95 x{a['ratio_p95']}, "
                       f"CPU p50 x{a['cpu']['p50'] / max(b['cpu']['p50'], 1e-3):.0f}.")
        out += ["", "Query plans (what the customers table sees):", ""]
        for kind, verdicts in srch["plan_verdicts"].items():
            out.append(f"- {kind}: {'; '.join(dict.fromkeys(verdicts))}")
        out.append("")
    if imp:
        out += ["### CDNOW master import (through `saas.customers.imports.import_file`)", "",
                "| run | rows | created | unchanged | customers created | seconds (commit) | CPU s | rows/s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for run in ("first", "again"):
            r = imp[run]
            out.append(f"| {run} | {r['rows']:,} | {r['created']:,} | {r['unchanged']:,} | {r['customers_created']:,} "
                       f"| {r['seconds']} ({r['seconds_commit']}) | {r['cpu_seconds']} | {r['rows_per_second']:,} |")
        out += ["", f"Goal: at least 20,000 rows/s. CPU-bound rate of the first import: "
                f"{imp['first']['rows'] / max(imp['first']['cpu_seconds'], 1e-3):,.0f} rows per CPU second.", ""]
    elif imp is None:
        out += ["### CDNOW master import", "", "Skipped (the data folder is absent).", ""]
    out.append(f"<!-- end {today.isoformat()} {size} -->")
    return "\n".join(out) + "\n"


HEADER = """# Benchmark results

Written by `python -m bench` (see bench/__main__.py); one section per date and size, the
latest run of a day replacing that day's section. Notes and proposals: see the end of each
section and the lead's report.

"""


def record(section: str, today: dt.date, size: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"<!-- run {re.escape(today.isoformat())} {size} -->.*?<!-- end {re.escape(today.isoformat())} {size} -->\n?",
                         re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        # new sections go before the notes, if there are any
        marker = "<!-- notes -->"
        text = text.replace(marker, section + "\n" + marker) if marker in text else text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def render_award(m: dict, result: dict, load_at_start: str, today: dt.date, name: str = "award") -> str:
    database = "SQLite" if result["database"] == "sqlite" else "PostgreSQL"
    out = [f"<!-- run {today.isoformat()} {name} -->", f"## {today.isoformat()} — award-points API ({database})", "",
           (f"Machine: {m['platform']}; {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; "
            f"Python {m['python']}, SQLite {m['sqlite']}."),
           (f"Load average (1/5/15 min) at the start of the step: {load_at_start} (a load above {m['cores']} "
            "means other processes competed for the cores, which the server and the load generator share)."), ""]
    out += award.render(result)
    out.append(f"<!-- end {today.isoformat()} {name} -->")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    generate.add_arguments(p)
    p.add_argument("--requests", type=int, default=200, help="search requests per query kind")
    p.add_argument("--reuse", action="store_true", help="search the existing database instead of generating it")
    p.add_argument("--no-search", action="store_true")
    p.add_argument("--no-import", action="store_true")
    p.add_argument("--no-award", action="store_true")
    p.add_argument("--award-customers", type=int, default=1000, help="customers of the award step's tenant")
    p.add_argument("--award-requests", type=int, default=3000,
                   help="award requests (and as many to the bare route) with the Python load generator")
    p.add_argument("--award-seconds", type=float, default=20, help="seconds of load with wrk")
    p.add_argument("--award-clients", type=int, default=16, help="connections of the load generator")
    p.add_argument("--award-workers", type=int, default=4, help="gunicorn workers")
    p.add_argument("--award-threads", type=int, default=1, help="threads per gunicorn worker")
    p.add_argument("--award-database", choices=("sqlite", "postgresql"), default="sqlite",
                   help="postgresql: a throw-away PostgreSQL 15 cluster (as the tests start one)")
    p.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = p.parse_args(argv)
    url = generate.database_url(args)
    today = dt.date.today()
    loads: dict[str, str] = {}
    gen = srch = None
    imp: dict | None | bool = False
    if not args.reuse:
        loads["generate"] = load()
        print(f"== generate ({args.size}) into {url}")
        c = time.process_time()
        gen = generate.run(args)
        gen["cpu_seconds"] = round(time.process_time() - c, 1)
    if not args.no_search:
        loads["search"] = load()
        print(f"== search on {url}")
        srch = search.run(url, args.requests)
        srch["requests"] = args.requests
    if not args.no_import:
        loads["import"] = load()
        print("== CDNOW import")
        imp = import_cdnow.run()
    awarded = None
    if not args.no_award:
        loads["award"] = load()
        print("== award-points API under gunicorn")
        from saas.config import ROOT
        awarded = award.run(ROOT / "instance" / "bench-award.db", customers=args.award_customers,
                            requests=args.award_requests, clients=args.award_clients, workers=args.award_workers,
                            threads=args.award_threads, seconds=args.award_seconds, database=args.award_database)
    if not args.no_record and awarded is not None:
        name = "award" if args.award_database == "sqlite" else "award-postgresql"
        record(render_award(machine(), awarded, loads["award"], today, name), today, name)
        print(f"award step recorded in {RESULTS}")
    if not args.no_record and not (args.reuse and args.no_search and args.no_import):
        if gen is None and args.reuse:
            meta = Path(url[len("sqlite:///"):] + ".json") if url.startswith("sqlite") else None
            if meta and meta.exists():
                gen = json.loads(meta.read_text())
        size_loads = {k: v for k, v in loads.items() if k != "award"}
        record(render(args.size, machine(), gen, srch, imp if imp is not False else False, size_loads, today),
               today, args.size)
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())

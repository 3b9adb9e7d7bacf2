"""CDNOW master import benchmark (issue 3, "Performance"): rows per second on SQLite.

Imports ../shared/data/cdnow/cdnow_master_transactions.csv (69,659 purchases of 23,570
customers) into a fresh tenant of a fresh SQLite database through the app's own importer,
``saas.customers.imports.import_file(s, "transactions", ...)`` (customers are created
from ``customer_ref``), commits, then imports the same file again (idempotent: nothing
should change) and times both.

    .venv/bin/python -m bench.import_cdnow [--db instance/bench-cdnow.db]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from saas.config import ROOT

CDNOW = (ROOT.parent / "shared" / "data" / "cdnow" / "cdnow_master_transactions.csv").resolve()
MAPPING = {"customer_ref": "customer_ref", "occurred_on": "occurred_on", "quantity": "quantity",
           "amount": "amount"}


def run(db_path: Path | None = None, path: Path = CDNOW, log=print) -> dict | None:
    if not path.exists():
        log(f"CDNOW import skipped: {path} is absent (see issue 3: the data lives in ../shared/data/cdnow/)")
        return None
    from sqlalchemy import func, select

    from saas import create_app, migrate
    from saas.auth import services as auth_services
    from saas.customers import imports
    from saas.customers.models import Customer, Transaction
    from saas.db import get_db, remove_sqlite_files

    db_path = (db_path or ROOT / "instance" / "bench-cdnow.db").resolve()
    remove_sqlite_files(db_path)
    url = f"sqlite:///{db_path}"
    migrate.upgrade({"DATABASE_URL": url})
    auth_services.HASH_METHOD = "pbkdf2:sha256:1000"
    app = create_app({"DATABASE_URL": url, "TESTING": True, "SECRET_KEY": "bench"})
    content = path.read_bytes()
    out: dict = {"file": path.name, "bytes": len(content)}
    with app.app_context():
        db = get_db()
        s = db.new_session()
        try:
            tenant, owner = auth_services.create_tenant(
                s, name="CDNOW", industry="other", owner_name="CDNOW", owner_email="owner@cdnow.example.com",
                password="bench-password-2026", currency="USD", language="en")
            s.commit()
            for attempt in ("first", "again"):
                t = time.perf_counter()
                c = time.process_time()
                result = imports.import_file(s, "transactions", path.name, content, MAPPING,
                                             created_by_id=owner.id, as_of=dt.date.today())
                t_import = time.perf_counter() - t
                s.commit()
                seconds = time.perf_counter() - t
                cpu = time.process_time() - c
                if result.errors:
                    raise RuntimeError(f"the CDNOW import failed: {[e.as_dict() for e in result.errors[:5]]}")
                out[attempt] = {
                    "rows": result.total, "created": result.created, "updated": result.updated,
                    "unchanged": result.unchanged, "customers_created": result.customers_created,
                    "seconds": round(seconds, 2), "seconds_commit": round(seconds - t_import, 2),
                    "cpu_seconds": round(cpu, 2), "rows_per_second": round(result.total / seconds),
                }
                r = out[attempt]
                log(f"  CDNOW import ({attempt}): {r['rows']:,} rows in {r['seconds']:.2f}s = "
                    f"{r['rows_per_second']:,} rows/s (created {r['created']:,}, unchanged {r['unchanged']:,}, "
                    f"customers created {r['customers_created']:,}; commit {r['seconds_commit']:.2f}s)")
            out["stored"] = {"customers": s.scalar(select(func.count()).select_from(Customer)),
                             "transactions": s.scalar(select(func.count()).select_from(Transaction))}
            log(f"  stored: {out['stored']['customers']:,} customers, {out['stored']['transactions']:,} transactions")
        finally:
            s.close()
            db.engine.dispose()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.import_cdnow", description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, help="SQLite file to create (default instance/bench-cdnow.db)")
    p.add_argument("--file", type=Path, default=CDNOW)
    args = p.parse_args(argv)
    run(args.db, args.file)


if __name__ == "__main__":
    sys.exit(main())

"""A throw-away PostgreSQL server for the test session (initdb + pg_ctl in a temp dir).

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
Two roles are made: ``huitou_owner`` owns the schema and runs the migrations;
``huitou_app`` is what the app connects as, so row-level security applies to it.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


def _bindir() -> str | None:
    for name in ("pg_ctl",):
        found = shutil.which(name)
        if found:
            return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    root: str
    port: int
    bindir: str
    as_postgres: bool

    @property
    def owner_url(self) -> str:
        return f"postgresql+psycopg://huitou_owner@127.0.0.1:{self.port}/huitou"

    @property
    def superuser_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/huitou"

    @property
    def app_url(self) -> str:
        return f"postgresql+psycopg://huitou_app@127.0.0.1:{self.port}/huitou"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True)

    def psql(self, sql: str, db: str = "postgres") -> None:
        self._run(os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql)

    def stop(self) -> None:
        try:
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", os.path.join(self.root, "data"),
                      "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> PgServer:
    """Start a server on a free loopback port; raises RuntimeError saying what is missing."""
    bindir = _bindir()
    if bindir is None or not os.path.exists(os.path.join(bindir, "initdb")):
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found: `make test` installs "
                           "Debian's postgresql package; or apt-get install postgresql")
    as_postgres = os.geteuid() == 0
    root = tempfile.mkdtemp(prefix="huitou-pg-")
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o700)
    server = PgServer(root=root, port=_free_port(), bindir=bindir, as_postgres=as_postgres)
    data = os.path.join(root, "data")
    server._run(os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C")
    opts = (f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    server._run(os.path.join(bindir, "pg_ctl"), "-D", data, "-o", opts, "-l",
                os.path.join(root, "log"), "-w", "-t", "60", "start")
    deadline = time.monotonic() + 30
    while True:
        try:
            server.psql("SELECT 1")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    server.psql("CREATE ROLE huitou_owner LOGIN; CREATE ROLE huitou_app LOGIN;")
    server.psql("CREATE DATABASE huitou OWNER huitou_owner")
    server.psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO huitou_owner",
                db="huitou")
    return server

"""Browser tests: the app served by gunicorn in its own process on a fresh SQLite file,
and Debian's Chromium driven by Playwright (never a downloaded browser).

The server runs in its own process rather than in a thread: the app's extensions
(database, limiter) are module-level singletons, and a second app in the test process
would rebind them under the ``app`` fixture of the other tests.

The xdist_group mark is registered here too, so ``-p no:xdist`` runs these tests without
an unknown-mark warning (warnings are errors in this suite).
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gunicorn
import pytest

from saas.migrate import upgrade

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TABLET = {"width": 1024, "height": 768}
PORTRAIT = {"width": 768, "height": 1024}


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run on the one xdist worker of that group")


@contextlib.contextmanager
def serve(tmp: Path, name: str, seed: str | None = None, seed_args: tuple[str, ...] = ()):
    """Serve the app on a fresh, migrated SQLite database in ``tmp`` with gunicorn on
    loopback; ``seed`` is Python run first in a subprocess with the overrides' repr and
    ``seed_args`` as arguments. Yields the base URL; the server log is kept as
    artifacts/<name>-server.log."""
    overrides = {
        "DATABASE_URL": f"sqlite:///{tmp / 'huitou.db'}",
        "SECRET_KEY": "e2e-not-secret",
        "TESTING": False,
        "WTF_CSRF_ENABLED": True,
    }
    upgrade(overrides)
    env = {k: v for k, v in os.environ.items() if k not in ("HUITOU_ENV", "DATABASE_URL", "MIGRATION_DATABASE_URL")}
    if seed:
        subprocess.run([sys.executable, "-c", seed, repr(overrides), *seed_args], cwd=ROOT, env=env, check=True)
    log_path = tmp / "server.log"
    cmd = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
           "--threads", "4", "--access-logfile", "-", f"saas:create_app({overrides!r})"]
    if gunicorn.version_info >= (25,):
        cmd.insert(3, "--no-control-socket")  # gunicorn 25+ would put a socket in $HOME
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield _wait_for_server(proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}-server.log").write_text(log_path.read_text(errors="replace"))


def _wait_for_server(proc: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + 30
    base = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()}")
        if base is None:
            m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log_path.read_text())
            base = m.group(1) if m else None
        if base is not None:
            try:
                with urllib.request.urlopen(base + "/login", timeout=5) as r:
                    if r.status == 200:
                        return base
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer within 30 s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser test drives Debian's Chromium. "
                    "Install it with `make system-deps-test` (or `apt-get install chromium`); "
                    "never `playwright install`.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A tablet-sized touch page; fails the test on any JavaScript error in it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=TABLET, locale="en-US", timezone_id="Asia/Shanghai", has_touch=True)
    context.set_default_timeout(10_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"

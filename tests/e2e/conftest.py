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
import textwrap
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

# The start of a seed script for serve(): a hotel tenant whose owner is owner@example.com,
# and a staff member; run with the overrides' repr, the password and the staff email as
# arguments. Leaves ``s`` (bound to the tenant), ``tenant``, ``owner`` and ``staff``.
SEED_TENANT_AND_STAFF = textwrap.dedent("""
    import datetime as dt, sys
    from decimal import Decimal
    from sqlalchemy import select
    from saas import create_app, clock
    from saas.auth import services as auth
    from saas.auth.models import Membership, User
    from saas.customers.models import Customer, Transaction
    from saas.db import bind_tenant
    from saas.settings.models import Location, TransactionKind

    overrides, password, staff_email = eval(sys.argv[1]), sys.argv[2], sys.argv[3]
    app = create_app(overrides)
    s = app.extensions["huitou_db"].new_session()
    tenant, owner = auth.create_tenant(s, name="Harbour Hotel", industry="hotel", owner_name="Li Wei",
                                       owner_email="owner@example.com", password=password, language="en")
    s.commit()
    bind_tenant(s, tenant.id, owner.id)
    staff = User(email=staff_email, name="Wang Fang", password_hash=auth.hash_password(password),
                 session_token=auth.new_session_token(), language="en")
    s.add(staff)
    s.flush()
    s.add(Membership(user_id=staff.id, role="staff"))
""")

SMALL_TARGETS_JS = """() => {
  const root = document;
  const sel = '.btn, button, select, input:not([type=hidden]):not([type=checkbox]):not([type=radio]), .fd-result, .gc-more';
  return [...root.querySelectorAll(sel)].filter(el => el.offsetParent !== null).map(el => {
    const r = el.getBoundingClientRect();
    return {el: el.outerHTML.slice(0, 80), w: Math.round(r.width), h: Math.round(r.height)};
  }).filter(x => x.w < 44 || x.h < 44);
}"""


class Shots:
    """Viewport screenshots (what the tablet shows without scrolling), numbered."""

    def __init__(self, page, prefix: str):
        self.page, self.prefix, self.n = page, prefix, 0
        for old in ARTIFACTS.glob(f"{prefix}-*.png"):
            old.unlink()

    def __call__(self, name: str, full_page: bool = False) -> None:
        self.n += 1
        self.page.screenshot(path=ARTIFACTS / f"{self.prefix}-{self.n:02d}-{name}.png", full_page=full_page)


def bottom(locator) -> float:
    """The y of a locator's lower edge on the page."""
    box = locator.bounding_box()
    assert box is not None, locator
    return box["y"] + box["height"]


def no_sideways(page) -> None:
    """The page does not scroll sideways."""
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), \
        page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def login(page, base: str, email: str, password: str) -> None:
    """Log in through the login form; lands on the dashboard."""
    from playwright.sync_api import expect

    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.locator("main button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))


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

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, url_for
from flask_login import current_user

from saas import clock, db
from saas.auth.models import Role
from saas.dashboard import services
from saas.web import PUBLIC, access

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@access(PUBLIC)
def home():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("auth.login"))


@bp.route("/dashboard")
@access(Role.staff)
def index():
    as_of = clock.today(g.tenant.timezone)
    return render_template("dashboard/index.html", o=services.overview(db.session(), as_of), as_of=as_of)

"""Loyalty administration: rewards catalogue, goodwill budget report, member statements
(HTML and PDF) and a customer's referrer.

Who may do what:
- Staff read the rewards catalogue (they redeem from it at the desk); managers and owners
  create, change, deactivate and reactivate rewards.
- The goodwill budget report compares colleagues' spending: managers and owners.
- Member statements, on screen and as PDF: staff too. A statement shows one customer's
  own points, which staff already see on the guest card, and a guest asking at the desk
  for a printed statement should not have to wait for a manager.
- Recording who referred a customer: staff too (they enrol customers at the desk); a
  referrer is recorded once and cannot be changed here (services.set_referrer).
"""
from __future__ import annotations

import datetime as dt
import re
import uuid

from babel.dates import format_skeleton
from flask import abort, flash, g, make_response, redirect, render_template, request, url_for
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from saas import clock, db
from saas.auth.models import Role
from saas.customers import services as customer_services
from saas.errors import NotFound, ValidationFailed
from saas.formatting import locale_code
from saas.forms import apply_errors
from saas.loyalty import ledger, services
from saas.loyalty.admin_forms import RewardForm
from saas.loyalty.card_views import KIND_LABELS
from saas.loyalty.programme import add_months
from saas.loyalty.web import bp
from saas.settings import services as settings_services
from saas.web import access

# Years a month or a statement date may name (the date arithmetic stays inside datetime's).
YEARS = (1900, 2999)


def _today() -> dt.date:
    return clock.today(g.tenant.timezone)


def _locations(s) -> dict:
    return {loc.code: loc for loc in settings_services.list_entries(s, "locations")}


# --- rewards catalogue -----------------------------------------------------------------------

@bp.route("/loyalty/rewards")
@access(Role.staff)
def rewards():
    s = db.session()
    as_of = _today()
    items = services.list_rewards(s)
    locations = _locations(s)
    open_at = {code for code, loc in locations.items() if loc.active}
    # A reward given only at locations that are all inactive now cannot be had anywhere.
    nowhere = {r.id for r in items if r.location_codes and not open_at & set(r.location_codes)}
    return render_template("loyalty/admin/rewards.html", rewards=items, locations=locations, as_of=as_of,
                           nowhere=nowhere,
                           available={r.id for r in items if ledger.reward_available(r, as_of) and r.id not in nowhere})


def _reward_form(s, reward=None, **kwargs) -> RewardForm:
    """The reward form with the tenant's active locations to tick (and any inactive one
    the reward already names, so saving does not silently drop it)."""
    chosen = set(reward.location_codes or []) if reward is not None else set()
    locale = locale_code()
    choices = []
    for loc in settings_services.list_entries(s, "locations"):
        if loc.active or loc.code in chosen:
            label = loc.name_for(locale) if loc.active else _("%(name)s (inactive)", name=loc.name_for(locale))
            choices.append((loc.code, label))
    return RewardForm(locations=choices, **kwargs)


def _save_reward(form: RewardForm, reward=None):
    if not form.validate_on_submit():
        return None
    try:
        return services.save_reward(db.session(), form.values(), reward)
    except ValidationFailed as exc:
        apply_errors(form, exc)
        return None


@bp.route("/loyalty/rewards/new", methods=["GET", "POST"])
@access(Role.manager)
def new_reward():
    s = db.session()
    form = _reward_form(s)
    reward = _save_reward(form)
    if reward is not None:
        flash(_("Reward “%(name)s” added to the catalogue.", name=reward.name_for(locale_code())), "success")
        return redirect(url_for("loyalty.rewards"), 303)
    return render_template("loyalty/admin/reward_form.html", form=form, reward=None), \
        422 if request.method == "POST" else 200


@bp.route("/loyalty/rewards/<uuid:reward_id>/edit", methods=["GET", "POST"])
@access(Role.manager)
def edit_reward(reward_id: uuid.UUID):
    s = db.session()
    reward = services.get_reward(s, reward_id)
    if request.method == "GET":
        form = _reward_form(s, reward, formdata=None, data={
            "code": reward.code, "name_zh": reward.name_zh, "name_en": reward.name_en,
            "points_cost": str(reward.points_cost), "stock": "" if reward.stock is None else str(reward.stock),
            "active_from": reward.active_from.isoformat() if reward.active_from else "",
            "active_until": reward.active_until.isoformat() if reward.active_until else "",
            "location_codes": list(reward.location_codes or []), "active": reward.active})
    else:
        form = _reward_form(s, reward)
    if _save_reward(form, reward) is not None:
        flash(_("Reward “%(name)s” saved.", name=reward.name_for(locale_code())), "success")
        return redirect(url_for("loyalty.rewards"), 303)
    return render_template("loyalty/admin/reward_form.html", form=form, reward=reward), \
        422 if request.method == "POST" else 200


@bp.route("/loyalty/rewards/<uuid:reward_id>/active", methods=["POST"])
@access(Role.manager)
def set_reward_active(reward_id: uuid.UUID):
    s = db.session()
    reward = services.get_reward(s, reward_id)
    value = request.form.get("active")
    if value not in ("0", "1"):
        abort(400)
    services.set_reward_active(s, reward, value == "1")
    name = reward.name_for(locale_code())
    if reward.active:
        flash(_("Reward “%(name)s” is back in the catalogue.", name=name), "success")
    else:
        flash(_("Reward “%(name)s” deactivated: it can no longer be redeemed.", name=name), "info")
    return redirect(url_for("loyalty.rewards"), 303)


# --- goodwill budget report -------------------------------------------------------------------

def _month(raw: str, as_of: dt.date) -> dt.date:
    month = services.parse_month(raw, as_of)
    if not YEARS[0] <= month.year <= YEARS[1]:
        raise ValidationFailed.one("month", _l("Enter a month such as 2026-03."))
    return month


@bp.route("/loyalty/goodwill")
@access(Role.manager)
def goodwill():
    s = db.session()
    as_of = _today()
    raw = request.args.get("month", "").strip()[:20]
    errors: dict = {}
    rows, month = [], None
    try:
        month = _month(raw, as_of)
    except ValidationFailed as exc:
        errors = {k: [str(m) for m in v] for k, v in exc.errors.items()}
    programme = services.programme_of(s)
    if month is not None:
        rows = services.goodwill_report(s, programme, month)
    total_points = sum(r.points for r in rows)
    total_value = sum((r.value for r in rows), programme.points_value(0))
    total_budget = sum((r.budget for r in rows), programme.points_value(0))
    context = dict(rows=rows, month=month, raw=raw if errors else (month.strftime("%Y-%m") if month else ""),
                   errors=errors, programme=programme, total_points=total_points, total_value=total_value,
                   total_budget=total_budget)
    if month is not None:
        context["month_label"] = format_skeleton("yMMMM", month, locale=get_locale())
        context.update(previous=add_months(month, -1).strftime("%Y-%m"), next=add_months(month, 1).strftime("%Y-%m"))
    return render_template("loyalty/admin/goodwill.html", **context), 422 if errors else 200


# --- member statements ------------------------------------------------------------------------

def _period(as_of: dt.date) -> tuple[dict, dict, dt.date | None, dt.date | None]:
    """(typed values, errors, start, end) of the statement period in the query string;
    the last 12 months to ``as_of`` when nothing is given."""
    typed = {k: request.args.get(k, "").strip()[:20] for k in ("start", "end")}
    errors: dict = {}
    days = {"start": add_months(as_of, -12) + dt.timedelta(days=1), "end": as_of}
    for key in ("start", "end"):
        if typed[key]:
            try:
                day = services.parse_day(typed[key], key)
                if not YEARS[0] <= day.year <= YEARS[1]:
                    raise ValidationFailed.one(key, _l("Enter a date such as 2026-03-31."))
                days[key] = day
            except ValidationFailed as exc:
                errors.update(exc.errors)
                days[key] = None
    return typed, errors, days["start"], days["end"]


def _statement_context(customer_id: uuid.UUID, locale: str) -> tuple[dict, dict]:
    s = db.session()
    customer = customer_services.get_customer(s, customer_id)
    as_of = _today()
    typed, errors, start, end = _period(as_of)
    statement = None
    if not errors:
        try:
            statement = services.statement(s, customer.id, start, end, locale)
        except ValidationFailed as exc:
            errors = dict(exc.errors)
    errors = {k: [str(m) for m in v] for k, v in errors.items()}
    programme = services.programme_of(s)
    summary = services.summary(s, programme, customer.id, as_of)
    txs = services.transactions_by_id(s, [r.entry.transaction_id for r in statement.rows]) if statement else {}
    return dict(customer=customer, statement=statement, summary=summary, as_of=as_of, txs=txs, locale=locale,
                start=typed["start"] or (start.isoformat() if start else ""),
                end=typed["end"] or (end.isoformat() if end else ""), tenant=g.tenant,
                kinds=KIND_LABELS), errors


@bp.route("/customers/<uuid:customer_id>/loyalty/statement")
@access(Role.staff)
def statement(customer_id: uuid.UUID):
    context, errors = _statement_context(customer_id, locale_code())
    return render_template("loyalty/admin/statement.html", errors=errors, **context), 422 if errors else 200


@bp.route("/customers/<uuid:customer_id>/loyalty/statement.pdf")
@access(Role.staff)
def statement_pdf(customer_id: uuid.UUID):
    from saas.pdf import render_pdf

    lang = request.args.get("lang", "")
    locale = lang if lang in ("zh_CN", "en") else locale_code()
    with force_locale(locale):
        context, errors = _statement_context(customer_id, locale)
        pdf = None if errors else render_pdf("loyalty/admin/statement_pdf.html", **context)
    if errors:  # a page for the user who asked, in their language (not the PDF's)
        context, errors = _statement_context(customer_id, locale_code())
        return render_template("loyalty/admin/statement.html", errors=errors, **context), 422
    st = context["statement"]
    who = re.sub(r"[^A-Za-z0-9_-]+", "-", context["customer"].card_number or "")[:40].strip("-") or "member"
    resp = make_response(pdf)
    resp.headers["Content-Type"] = "application/pdf"
    resp.headers["Content-Disposition"] = f'inline; filename="statement-{who}-{st.start}-{st.end}.pdf"'
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


# --- referrals ------------------------------------------------------------------------------------

@bp.app_template_global("loyalty_referrer")
def _referrer_of(customer_id: uuid.UUID):
    """For the customer page: who referred this customer (None: nobody recorded)."""
    return services.referrer_of(db.session(), customer_id)


@bp.route("/customers/<uuid:customer_id>/loyalty/referrer", methods=["GET", "POST"])
@access(Role.staff)
def referrer(customer_id: uuid.UUID):
    s = db.session()
    customer = customer_services.get_customer(s, customer_id)
    current = services.referrer_of(s, customer.id)
    query = request.values.get("q", "").replace("\x00", "").strip()[:100]
    errors: list = []
    if request.method == "POST":
        try:
            chosen = customer_services.get_customer(s, uuid.UUID(request.form.get("referrer_id", "")))
        except (ValueError, NotFound):
            errors = [_("Choose the referrer from the search results.")]
        else:
            try:
                services.set_referrer(s, customer, chosen, current_user.id)
            except ValidationFailed as exc:
                errors = [str(m) for v in exc.errors.values() for m in v]
            else:
                flash(_("%(name)s is recorded as referred by %(referrer)s.", name=customer.name,
                        referrer=chosen.name), "success")
                return redirect(url_for("customers.detail", customer_id=customer.id), 303)
    results = []
    if query and current is None:
        page = customer_services.search_customers(s, query, region=g.tenant.country)
        results = [c for c in page.items if c.id != customer.id]
    return render_template("loyalty/admin/referrer.html", customer=customer, current=current, q=query,
                           results=results, errors=errors,
                           format_phone=lambda p: customer_services.mask_phone(p, g.tenant.country)), \
        422 if errors else 200

"""Loyalty on the guest card: the panel, the customer's loyalty page (summary and
history), and the redeem, adjust, void and reverse dialogs.

Every dialog is a plain page with a real form (htmx boosts it): a POST that works
redirects (303) back to where the dialog was opened (``?return=card`` the guest card,
``?return=customer`` the customer page, else the loyalty page) with a flash message; a
refused one answers 422 with the form, what was typed and the reason, and writes nothing.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from saas import clock, db
from saas.auth.models import Role
from saas.customers import services as customers
from saas.errors import NotFound, ValidationFailed
from saas.formatting import date, locale_code, money, number
from saas.forms import add_errors
from saas.loyalty import ledger, services
from saas.loyalty.card_forms import PAY_WITH_POINTS, AdjustForm, ReasonForm, RedeemForm, new_key, normalize_points
from saas.loyalty.models import Reward
from saas.loyalty.programme import Programme
from saas.loyalty.sentences import keep_tier_sentence, next_tier_sentence
from saas.loyalty.web import bp
from saas.settings import services as settings_services
from saas.settings.models import TransactionKind
from saas.web import access, preselected_location, remember_tablet_location

HISTORY_ROWS = 50
TIER_HISTORY_ROWS = 20
# Refusals the ledger names with a code: said above the form, whatever field they concern,
# but for those about the points typed, said beside them (unless a reward was chosen).
REFUSALS = {"insufficient_points", "negative_balance", "below_minimum", "reward_unavailable", "already_voided",
            "already_reversed", "over_limit", "over_budget"}
ABOUT_THE_POINTS_TYPED = {"insufficient_points", "below_minimum", "over_limit", "over_budget"}

KIND_LABELS = {"earn": _l("Earned"), "redeem": _l("Redeemed"), "expire": _l("Expired"), "adjust": _l("Adjustment"),
               "reverse": _l("Reversed: points taken back"), "void": _l("Redemption voided")}

TIER_CHANGE_LABELS = {"upgrade": _l("Upgraded"), "review": _l("Lowered at the review"),
                      "kept": _l("Kept at the review"), "undo": _l("Upgrade taken back"),
                      "merge": _l("Taken over from a merged record")}

MEASURE_LABELS = {"points_earned": _l("points earned"), "spend": _l("spend"), "visits": _l("visits")}


# --- the panel ---------------------------------------------------------------------------------

@dataclass
class Panel:
    """What the guest card and the loyalty page say about a customer's points."""

    summary: services.Summary
    programme: Programme
    tier_name: str = ""
    perks: str = ""
    progress: str = ""
    progress_percent: int | None = None
    keep: str = ""                # what more keeps the tier at its review (by when)
    kept: str = ""                # or: the tier is kept at the review (a retention threshold is met)
    owes: bool = False
    expiring: list = field(default_factory=list)


def panel(s, customer_id: uuid.UUID, as_of) -> Panel:
    programme = services.programme_of(s)
    sm = services.summary(s, programme, customer_id, as_of)
    locale = locale_code()
    p = Panel(sm, programme, owes=sm.owed > 0 or sm.balance < 0, expiring=sm.expiring)
    if sm.tier is not None:
        p.tier_name, p.perks = sm.tier.name_for(locale), sm.tier.perks_for(locale)
    if sm.next_tier is not None:
        p.progress = next_tier_sentence(sm.measure, sm.next_needed, sm.next_tier.name_for(locale))
        floor = sm.tier.threshold if sm.tier is not None else 0
        span = sm.next_tier.threshold - floor
        if span > 0:
            p.progress_percent = max(0, min(100, int((Decimal(sm.qualifying) - floor) * 100 / span)))
    elif sm.tier is not None:
        p.progress = _("Highest tier")
    if sm.tier is not None and sm.keep_by is not None:
        if sm.keep_needed:
            p.keep = keep_tier_sentence(sm.measure, sm.keep_needed, p.tier_name, sm.keep_by, date)
        elif sm.tier.retention_threshold:
            p.kept = keep_tier_sentence(sm.measure, 0, p.tier_name, sm.keep_by, date)
    return p


def _card_panel(customer) -> Panel | None:
    """The guest card's panel (a template global: the card's view knows nothing of loyalty)."""
    tenant = g.get("tenant")
    if tenant is None:
        return None
    return panel(db.session(), customer.id, clock.today(tenant.timezone))


@bp.app_context_processor
def _template_helpers() -> dict:
    return {"loyalty_panel": _card_panel}


# --- helpers -------------------------------------------------------------------------------------

def _as_of():
    return clock.today(g.tenant.timezone)


def _role() -> Role:
    return g.membership.role_enum


def _return_args() -> dict:
    back = request.args.get("return")
    return {"return": back} if back in ("card", "customer") else {}


def _here() -> str:
    """This dialog's own address, keeping where it returns to."""
    return url_for(request.endpoint, **request.view_args, **_return_args())


def _back_url(customer) -> str:
    back = request.args.get("return")
    if back == "card":
        return url_for("customers.guest_card", customer_id=customer.id)
    if back == "customer":
        return url_for("customers.detail", customer_id=customer.id)
    return url_for("loyalty.customer_loyalty", customer_id=customer.id)


def _back(customer):
    return redirect(_back_url(customer), 303)


def _show_refusal(form, exc: ValidationFailed, move: tuple[str, ...] = ()) -> None:
    """Field errors next to their fields, and so is a refusal about a field the dialog shows
    (too few points typed); other refusals above the form (``move``: fields to show above
    the form instead, e.g. "points" when a reward was chosen)."""
    for name, messages in exc.errors.items():
        above = name in move or (exc.code in REFUSALS and exc.code not in ABOUT_THE_POINTS_TYPED)
        add_errors(form, "" if above else name, [str(m) for m in messages])


def _keyed_form_errors(form) -> None:
    """A key the form did not make is refused above the form, and a fresh one issued."""
    if form.idempotency_key.errors:
        add_errors(form, "", list(form.idempotency_key.errors))
        form.idempotency_key.errors = []
        form.idempotency_key.data = new_key()


def _balance_message(balance: int) -> str:
    return _("Balance: %(n)s points.", n=number(balance))


# --- the loyalty page ------------------------------------------------------------------------------

@bp.route("/customers/<uuid:customer_id>/loyalty")
@access(Role.staff)
def customer_loyalty(customer_id: uuid.UUID):
    s = db.session()
    customer = customers.get_customer(s, customer_id)
    rows = services.card_history(s, customer.id, HISTORY_ROWS, locale_code())
    # One Reverse per transaction of this customer's own (a referrer's bonus names the
    # referred customer's transaction: it is reversed from there).
    reversible, seen = set(), set()
    for row in rows:
        tx = row.transaction
        if row.entry.kind == "earn" and tx is not None and tx.customer_id == customer.id and tx.id not in seen:
            seen.add(tx.id)
            if tx.reversed_on is None:
                reversible.add(row.entry.id)
    pnl = panel(s, customer.id, _as_of())
    return render_template("loyalty/card/index.html", customer=customer, panel=pnl,
                           rows=rows, reversible=reversible, more=len(rows) == HISTORY_ROWS,
                           kinds=KIND_LABELS, measures=MEASURE_LABELS,
                           tier_rows=services.tier_history(s, customer.id, TIER_HISTORY_ROWS),
                           tier_changes=TIER_CHANGE_LABELS, tier_name=_tier_namer(pnl.programme))


def _tier_namer(programme: Programme):
    """The name of a tier code in the request's language (the code itself for a tier the
    programme no longer has; a dash for none)."""
    locale = locale_code()

    def name(code: str) -> str:
        tier = programme.tier(code) if code else None
        return tier.name_for(locale) if tier is not None else (code or "—")
    return name


# --- redeem ----------------------------------------------------------------------------------------

@bp.route("/customers/<uuid:customer_id>/loyalty/redeem", methods=["GET", "POST"])
@access(Role.staff)
def redeem(customer_id: uuid.UUID):
    s = db.session()
    customer = customers.get_customer(s, customer_id)
    as_of = _as_of()
    programme = services.programme_of(s)
    rewards = services.list_rewards(s, active_only=True, as_of=as_of)
    places = [e for e in settings_services.list_entries(s, "locations") if e.active]
    locations = [(e.code, e.name_for(locale_code())) for e in places]
    # Any reward of the catalogue is a valid choice: one that ran out since the dialog
    # opened is refused by the ledger with its own message.
    form = RedeemForm(rewards=services.list_rewards(s), locations=locations, locale=locale_code())
    pnl = panel(s, customer.id, as_of)
    if request.method == "GET":
        form.idempotency_key.data = new_key()
        # The first reward the customer has the points for (the others are shown, not offered).
        affordable = [r for r in rewards if r.points_cost <= pnl.summary.redeemable]
        form.reward.data = str(affordable[0].id) if affordable else PAY_WITH_POINTS
        here = preselected_location(places, customer)
        form.location.data = here.code if here is not None else ""
    if form.validate_on_submit():
        reward = None if form.reward.data == PAY_WITH_POINTS else services.get_reward(s, uuid.UUID(form.reward.data))
        try:
            entry = ledger.redeem(s, programme, customer, as_of, points=None if reward else normalize_points(form.points.data),
                                  reward=reward, staff_user_id=current_user.id, note=form.note.data or "",
                                  location_code=form.location.data or "", idempotency_key=form.key("redeem"))
        except ValidationFailed as exc:
            db.session().rollback()
            _show_refusal(form, exc, move=("points",) if reward else ())
        else:
            if entry.kind != "redeem" or entry.customer_id != customer.id:
                add_errors(form, "", [_("The form expired. Please submit it again.")])
            else:
                n = number(-entry.points)
                text = (_("Redeemed %(n)s points for %(what)s.", n=n, what=reward.name_for(locale_code())) if reward
                        else _("Paid %(amount)s with %(n)s points.", n=n, amount=money(entry.cash_value)))
                flash(text + " " + _balance_message(services.ledger_balance(s, customer.id)), "success")
                return remember_tablet_location(_back(customer), form.location.data or "")
    _keyed_form_errors(form)
    status = 422 if request.method == "POST" else 200
    return render_template("loyalty/card/redeem.html", customer=customer, form=form, rewards=rewards,
                           places=dict(locations), reward_places=form.places_of,
                           panel=pnl,
                           action=_here(), back=_back_url(customer),
                           value_url=url_for("loyalty.points_value", customer_id=customer.id)), status


@bp.route("/customers/<uuid:customer_id>/loyalty/points-value")
@access(Role.staff)
def points_value(customer_id: uuid.UUID):
    """What a number of points pays (the redeem dialog asks as the points are typed)."""
    s = db.session()
    customers.get_customer(s, customer_id)
    programme = services.programme_of(s)
    raw = request.args.get("points", "").strip().replace(",", "")
    points = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None
    return render_template("loyalty/card/_points_value.html", programme=programme, points=points)


# --- adjust ----------------------------------------------------------------------------------------

@bp.route("/customers/<uuid:customer_id>/loyalty/adjust", methods=["GET", "POST"])
@access(Role.staff)
def adjust(customer_id: uuid.UUID):
    s = db.session()
    customer = customers.get_customer(s, customer_id)
    as_of = _as_of()
    programme = services.programme_of(s)
    form = AdjustForm()
    if request.method == "GET":
        form.idempotency_key.data = new_key()
    if form.validate_on_submit():
        points = normalize_points(form.points.data)
        try:
            entry = ledger.adjust(s, programme, customer, as_of, points=points, reason=form.reason.data,
                                  staff_user_id=current_user.id, role=_role(), goodwill=form.goodwill.data,
                                  idempotency_key=form.key("adjust"))
        except ValidationFailed as exc:
            db.session().rollback()
            _show_refusal(form, exc)
        else:
            if entry.kind != "adjust" or entry.customer_id != customer.id:
                add_errors(form, "", [_("The form expired. Please submit it again.")])
            else:
                text = (_("Added %(n)s points.", n=number(entry.points)) if entry.points > 0
                        else _("Took away %(n)s points.", n=number(-entry.points)))
                flash(text + " " + _balance_message(services.ledger_balance(s, customer.id)), "success")
                return _back(customer)
    elif request.method == "POST" and form.points.data and not form.points.errors:
        # Another field was refused: say now, too, if the points are over the role's limit.
        over_limit = ledger.limit_refusal(programme, _role(), int(normalize_points(form.points.data)))
        if over_limit is not None:
            add_errors(form, "points", [over_limit])
    _keyed_form_errors(form)
    status = 422 if request.method == "POST" else 200
    return render_template("loyalty/card/adjust.html", customer=customer, form=form,
                           panel=panel(s, customer.id, as_of), limit=ledger.adjust_limit(programme, _role()),
                           goodwill=services.goodwill_left(s, programme, current_user.id, _role(), as_of),
                           action=_here(), back=_back_url(customer)), status


# --- void a redemption, reverse a transaction (managers) ----------------------------------------------

@bp.route("/customers/<uuid:customer_id>/loyalty/redemptions/<uuid:entry_id>/void", methods=["GET", "POST"])
@access(Role.manager)
def void_redemption(customer_id: uuid.UUID, entry_id: uuid.UUID):
    s = db.session()
    customer = customers.get_customer(s, customer_id)
    entry = services.get_redemption(s, entry_id)
    if entry.customer_id != customer.id:
        raise NotFound("redemption")
    form = ReasonForm()
    if form.validate_on_submit():
        try:
            void = ledger.void_redemption(s, services.programme_of(s), entry, current_user.id, form.reason.data,
                                          _as_of())
        except ValidationFailed as exc:
            db.session().rollback()
            _show_refusal(form, exc)
        else:
            # A customer merged since: the points went on to the survivor; its card says so.
            holder = customers.get_customer(s, ledger.survivor_of(s, customer.id))
            flash(_("Redemption voided: %(n)s points given back.", n=number(void.points)) + " "
                  + _balance_message(services.ledger_balance(s, holder.id)), "success")
            return _back(holder)
    reward = s.get(Reward, (entry.tenant_id, entry.reward_id)) if entry.reward_id else None
    status = 422 if request.method == "POST" else 200
    return render_template("loyalty/card/void.html", customer=customer, form=form, entry=entry,
                           reward=reward, action=_here(), back=_back_url(customer)), status


@bp.route("/customers/<uuid:customer_id>/transactions/<uuid:transaction_id>/reverse", methods=["GET", "POST"])
@access(Role.manager)
def reverse_transaction(customer_id: uuid.UUID, transaction_id: uuid.UUID):
    s = db.session()
    customer = customers.get_customer(s, customer_id)
    tx = services.get_transaction(s, transaction_id)
    if tx.customer_id != customer.id:
        raise NotFound("transaction")
    earned = services.points_earned_by(s, tx)
    form = ReasonForm()
    if form.validate_on_submit():
        tier_before = services.tier_code_of(s, customer.id)
        try:
            entries = services.reverse(s, tx, current_user.id, form.reason.data, _as_of())
        except ValidationFailed as exc:
            db.session().rollback()
            _show_refusal(form, exc)
        else:
            taken = -sum(e.points for e in entries if e.customer_id == customer.id)
            balance = services.ledger_balance(s, customer.id)
            message = (_("Transaction reversed: %(n)s points taken back.", n=number(taken)) + " "
                       + _balance_message(balance))
            tier_after = services.tier_code_of(s, customer.id)
            if tier_after != tier_before:
                name = _tier_namer(services.programme_of(s))
                message += " " + _("The upgrade to %(old)s it carried is taken back: the tier is %(new)s again.",
                                   old=name(tier_before or ""), new=name(tier_after or ""))
            flash(message, "warning" if balance < 0 or tier_after != tier_before else "success")
            return _back(customer)
    kind = s.get(TransactionKind, (tx.tenant_id, tx.kind_id))
    status = 422 if request.method == "POST" else 200
    return render_template("loyalty/card/reverse.html", customer=customer, form=form, tx=tx, kind=kind,
                           earned=earned, action=_here(), back=_back_url(customer)), status

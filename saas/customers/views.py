"""The customer archive: search, customer pages, create and edit, record a transaction."""
from __future__ import annotations

import uuid

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup

from saas import clock, db
from saas.auth.models import Role
from saas.customers import services
from saas.customers.forms import CustomerForm, TransactionForm
from saas.errors import NotFound, ValidationFailed
from saas.extensions import htmx
from saas.formatting import money
from saas.forms import add_errors
from saas.settings import services as settings_services
from saas.web import access, has_role

bp = Blueprint("customers", __name__)


def _apply_errors(form, exc: ValidationFailed) -> None:
    """Show service-level errors next to the form's fields (or above the form)."""
    duplicates = getattr(exc, "duplicates", {})
    for field, messages in exc.errors.items():
        if field in duplicates:
            continue
        add_errors(form, field, [str(m) for m in messages])
    _show_duplicates(form, duplicates)


def _show_duplicates(form, duplicates: dict) -> None:
    """Name the customer a phone, email, reference or card number belongs to, with a link."""
    for field, other in duplicates.items():
        link = Markup('<a href="{}">{}</a>').format(url_for("customers.detail", customer_id=other.id), other.name)
        message = Markup(str(services.DUPLICATE_MESSAGES[field](link)))
        if message not in getattr(form, field).errors:
            add_errors(form, field, [message])


def _save_customer(form, save, existing=None):
    """Validate the form and save through ``save``; returns the customer, or None with the
    errors on the form. Duplicates are named even when other fields are wrong too."""
    if form.validate_on_submit():
        try:
            return save(form.values())
        except ValidationFailed as exc:
            db.session().rollback()
            _apply_errors(form, exc)
    elif request.method == "POST":
        _show_duplicates(form, services.find_duplicates(db.session(), form.values(), existing))
    return None


def _active(kind: str) -> list:
    return settings_services.list_entries(db.session(), kind, include_inactive=False)


def _with_current(entries: list, current_id: uuid.UUID | None) -> list:
    """The active entries, plus the record's current one if it has since been deactivated."""
    if current_id is None or any(e.id == current_id for e in entries):
        return entries
    try:
        return entries + [settings_services.get_entry(db.session(), "locations", current_id)]
    except NotFound:
        return entries


@bp.route("/customers")
@access(Role.staff)
def index():
    query = request.args.get("q", "").strip()[:100]
    page = request.args.get("page", 1, type=int)
    result = services.search_customers(db.session(), query, page)
    locations = {e.id: e for e in settings_services.list_entries(db.session(), "locations")}
    context = dict(result=result, q=query, locations=locations, full_phone=has_role(Role.manager),
                   mask_phone=services.mask_phone, classifications=services.CLASSIFICATIONS)
    if htmx and not htmx.boosted and not htmx.history_restore_request:
        return render_template("customers/_rows.html", **context)
    return render_template("customers/index.html", **context)


@bp.route("/customers/new", methods=["GET", "POST"])
@access(Role.staff)
def new():
    s = db.session()
    form = CustomerForm(locations=_active("locations"))
    customer = _save_customer(form, lambda values: services.create_customer(s, values))
    if customer is not None:
        flash(_("Customer %(name)s created.", name=customer.name), "success")
        return redirect(url_for("customers.detail", customer_id=customer.id), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("customers/form.html", form=form, customer=None), status


@bp.route("/customers/<uuid:customer_id>")
@access(Role.staff)
def detail(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    location = None
    if customer.location_id is not None:
        location = settings_services.get_entry(s, "locations", customer.location_id)
    return render_template("customers/detail.html", customer=customer, location=location,
                           history=services.transaction_history(s, customer),
                           classifications=services.CLASSIFICATIONS)


@bp.route("/customers/<uuid:customer_id>/edit", methods=["GET", "POST"])
@access(Role.staff)
def edit(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    locations = _with_current(_active("locations"), customer.location_id)
    if request.method == "GET":
        form = CustomerForm(obj=customer, locations=locations)
        form.location_id.data = str(customer.location_id) if customer.location_id else ""
        form.external_ref.data = customer.external_ref or ""
        form.card_number.data = customer.card_number or ""
    else:
        form = CustomerForm(locations=locations)
    if _save_customer(form, lambda values: services.update_customer(s, customer, values), customer):
        flash(_("Changes to %(name)s saved.", name=customer.name), "success")
        return redirect(url_for("customers.detail", customer_id=customer.id), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("customers/form.html", form=form, customer=customer), status


@bp.route("/customers/<uuid:customer_id>/transactions/new", methods=["GET", "POST"])
@access(Role.staff)
def new_transaction(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    as_of = clock.today(g.tenant.timezone)
    locations = _active("locations")
    form = TransactionForm(kinds=_active("transaction-kinds"), locations=locations,
                           departments=_active("departments"))
    if request.method == "GET":
        kind = services.default_kind(s)
        form.kind_id.data = str(kind.id) if kind else ""
        form.occurred_on.data = as_of
        if customer.location_id and any(e.id == customer.location_id for e in locations):
            form.location_id.data = str(customer.location_id)
        elif len(locations) == 1:
            form.location_id.data = str(locations[0].id)
        else:
            form.location_id.data = ""
        form.department_id.data = ""
    if form.validate_on_submit():
        try:
            tx = services.record_transaction(s, customer, form.values(), current_user.id, as_of)
        except ValidationFailed as exc:
            _apply_errors(form, exc)
        else:
            flash(_("Transaction of %(amount)s recorded.", amount=money(tx.amount)), "success")
            return redirect(url_for("customers.detail", customer_id=customer.id), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("customers/transaction_form.html", form=form, customer=customer), status

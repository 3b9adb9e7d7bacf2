"""Merging duplicate customers, reassigning a departed staff member's customers, and the
privacy requests (export one customer's data, erase it), with the customer's audit log."""
from __future__ import annotations

import datetime as dt
import json
import uuid

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField

from saas import clock, db
from saas.auth import services as auth_services
from saas.auth.models import Role, User
from saas.customers import records
from saas.customers.models import Customer
from saas.customers.services import CONTACT_CHANNELS
from saas.errors import ValidationFailed
from saas.formatting import datetime as format_datetime
from saas.formatting import localized
from saas.forms import add_errors, apply_errors, listed, required
from saas.settings import services as settings_services
from saas.web import access

bp = Blueprint("records", __name__)


class MergeForm(FlaskForm):
    duplicate_id = HiddenField()
    confirm = HiddenField()


class ReassignForm(FlaskForm):
    to_user_id = SelectField(_l("Give the customers to"), **listed())


class EraseForm(FlaskForm):
    confirm = StringField(_l("Type the customer's name or ERASE to confirm"), validators=[required()],
                          render_kw={"autocomplete": "off"})


# Labels of the merge counts and filled fields (details store the English keys).
MOVED_LABELS = {
    "transactions": _l("Transactions"),
    "preferences": _l("Preferences"),
    "contact_logs": _l("Contact log entries"),
    "decision_makers": _l("Decision makers"),
    "merged_records": _l("Records merged earlier"),
}
FIELD_LABELS = {
    "address_as": _l("Form of address"), "phone": _l("Phone"), "phone_alt": _l("Second phone"),
    "email": _l("Email"), "plate_number": _l("Plate number"), "birthday": _l("Birthday"),
    "gender": _l("Gender"), "company": _l("Company"), "job_title": _l("Job title"),
    "company_industry": _l("Industry"), "company_size": _l("Company size"), "notes": _l("Notes"),
    "location_id": _l("Location"), "owner_user_id": _l("Customer manager"), "tags": _l("Tags"),
    "external_ref": _l("External reference"), "card_number": _l("Card number"),
}
ACTION_LABELS = {
    "merge": _l("Merged a duplicate into this customer"),
    "merged_into": _l("Merged into another customer"),
    "reassign": _l("Changed the customer manager"),
    "export": _l("Exported the customer's data"),
    "erase": _l("Erased the personal data"),
    records.CONTACT_LOG_EDIT: _l("Edited a contact log entry"),
}
# Labels of the fields a contact log edit records (the form's own labels).
CONTACT_FIELD_LABELS = {
    "channel": _l("Kind of contact"), "occurred_at": _l("When"), "outcome": _l("Outcome"),
    "next_step": _l("Next step"), "location": _l("Location"),
}


def _customer(customer_id: uuid.UUID) -> Customer:
    return records.get_customer(db.session(), customer_id)


def _parse_id(raw) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw or "").strip())
    except ValueError:
        return None


# --- merge -------------------------------------------------------------------------------

def _merge_choice(customer: Customer, form: MergeForm | None = None, status: int = 200):
    s = db.session()
    query = request.values.get("q", "").strip()[:100]
    inactive = customer.merged_into_id is not None or customer.erased_at is not None
    candidates = [] if inactive else records.merge_candidates(s, customer, query)
    return render_template("records/merge.html", customer=customer, candidates=candidates, q=query,
                           form=form or MergeForm(formdata=None), inactive=inactive), status


@bp.route("/customers/<uuid:customer_id>/merge", methods=["GET", "POST"])
@access(Role.manager)
def merge(customer_id: uuid.UUID):
    """GET: choose the duplicate; POST duplicate_id: confirm side by side; POST with
    confirm: merge."""
    s = db.session()
    customer = _customer(customer_id)
    if request.method == "GET":
        return _merge_choice(customer)
    form = MergeForm()
    if not form.validate_on_submit():  # pragma: no cover - only CSRF can fail, answered 400 before
        return _merge_choice(customer, form, 422)
    duplicate_id = _parse_id(form.duplicate_id.data)
    if duplicate_id is None:
        form.form_errors.append(_("Choose the customer to merge from the list."))
        return _merge_choice(customer, form, 422)
    try:
        if form.confirm.data == "yes":
            records.merge_customers(s, customer.id, duplicate_id, current_user.id)
        else:
            preview = records.merge_preview(s, customer.id, duplicate_id)
            return render_template("records/merge_confirm.html", preview=preview, form=form,
                                   moved_labels=MOVED_LABELS, field_labels=FIELD_LABELS)
    except ValidationFailed as exc:
        s.rollback()
        apply_errors(form, exc)
        return _merge_choice(_customer(customer_id), form, 422)
    flash(_("The duplicate was merged into %(name)s.", name=customer.name), "success")
    return redirect(url_for("customers.detail", customer_id=customer.id), 303)


# --- reassign a staff member's customers ------------------------------------------------

def _reassign_page(m, user: User, form: ReassignForm, status: int = 200):
    s = db.session()
    return render_template("records/reassign.html", membership=m, member=user, form=form,
                           count=records.owned_customer_count(s, user.id),
                           customers=records.owned_customers(s, user.id)), status


@bp.route("/settings/staff/<uuid:membership_id>/reassign", methods=["GET", "POST"])
@access(Role.owner)
def reassign(membership_id: uuid.UUID):
    """The owner gives every customer of a (departed) member to another active member."""
    s = db.session()
    m = auth_services.get_membership(s, membership_id)
    user = s.get(User, m.user_id)
    targets = records.reassign_targets(s, m.user_id)
    form = ReassignForm()
    form.to_user_id.choices = [("", _("— Choose a member —"))] + [(str(u.id), u.name) for _m, u in targets]
    if request.method == "GET":
        return _reassign_page(m, user, form)
    if form.validate_on_submit():
        to_user_id = _parse_id(form.to_user_id.data)
        try:
            n = records.reassign_customers(s, m.user_id, to_user_id, current_user.id)
        except ValidationFailed as exc:
            s.rollback()
            apply_errors(form, exc)
        else:
            target = s.get(User, to_user_id)
            flash(ngettext("%(num)s customer is now looked after by %(name)s.",
                           "%(num)s customers are now looked after by %(name)s.", n, name=target.name),
                  "success")
            return redirect(url_for("auth.staff"), 303)
    return _reassign_page(m, user, form, 422)


# --- privacy: export and erase -----------------------------------------------------------

@bp.route("/customers/<uuid:customer_id>/export.json", methods=["POST"])
@access(Role.manager)
def export(customer_id: uuid.UUID):
    """The customer's full data as a JSON download (a PIPL/GDPR access request). A POST
    (a button, with the CSRF token): each export writes an audit entry, which a link that
    any page, prefetcher or crawler can make the browser follow must not do."""
    data = records.export_customer(db.session(), customer_id, current_user.id, clock.now_utc())
    body = json.dumps(data, ensure_ascii=False, indent=2)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="customer-{customer_id}.json"',
        "Cache-Control": "no-store",
    })


def _confirmation_matches(customer: Customer, typed: str) -> bool:
    typed = (typed or "").strip()
    return typed == "ERASE" or (typed != "" and typed == customer.name.strip())


@bp.route("/customers/<uuid:customer_id>/erase", methods=["GET", "POST"])
@access(Role.owner)
def erase(customer_id: uuid.UUID):
    """GET: what erasing does, and a box to type the name or ERASE; POST: erase."""
    s = db.session()
    customer = _customer(customer_id)
    form = EraseForm()
    if request.method == "POST":
        if form.validate_on_submit():
            if not _confirmation_matches(customer, form.confirm.data):
                add_errors(form, "confirm", [_("Type the customer's name exactly as shown, or ERASE.")])
            else:
                try:
                    records.erase_customer(s, customer.id, current_user.id, clock.now_utc())
                except ValidationFailed as exc:
                    s.rollback()
                    apply_errors(form, exc)
                    customer = _customer(customer_id)
                else:
                    flash(_("The customer's personal data was erased. Their transactions are kept."), "success")
                    return redirect(url_for("customers.detail", customer_id=customer.id), 303)
        return render_template("records/erase.html", customer=customer, form=form), 422
    return render_template("records/erase.html", customer=customer, form=form)


# --- the audit log -----------------------------------------------------------------------

@bp.route("/customers/<uuid:customer_id>/audit")
@access(Role.manager)
def audit(customer_id: uuid.UUID):
    s = db.session()
    customer = _customer(customer_id)
    rows = records.customer_audit_log(s, customer.id)
    mentioned = set()
    for row in rows:
        d = row.entry.details or {}
        mentioned.update(v for k, v in d.items() if k in ("from_user_id", "to_user_id"))
    return render_template("records/audit.html", customer=customer, rows=rows, action_labels=ACTION_LABELS,
                           moved_labels=MOVED_LABELS, field_labels=FIELD_LABELS,
                           user_names=records.user_names(s, mentioned), contact_changes=_contact_changes(s, rows))


def _contact_changes(s, rows) -> dict:
    """For each contact log edit among ``rows``: [(label, old, new)] as people read them
    (kinds by name, times in the tenant's zone, locations by name)."""
    locations = {e.code: localized(e) for e in settings_services.list_entries(s, "locations")}

    def shown(key, value):
        if not value:
            return "—"
        if key == "channel":
            return str(CONTACT_CHANNELS.get(value, value))
        if key == "occurred_at":
            try:
                return format_datetime(dt.datetime.fromisoformat(value))
            except ValueError:
                return value
        if key == "location":
            return locations.get(value, value)
        return value

    result = {}
    for row in rows:
        if row.entry.action != records.CONTACT_LOG_EDIT:
            continue
        changes = (row.entry.details or {}).get("changes") or {}
        result[row.entry.id] = [(CONTACT_FIELD_LABELS.get(k, k), shown(k, old), shown(k, new))
                                for k, (old, new) in changes.items()]
    return result

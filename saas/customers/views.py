"""The customer archive: search, customer pages, create and edit, record a transaction,
decision makers, preferences, the contact log, and the front desk's guest card."""
from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup

from saas import clock, db
from saas.auth.models import Role
from saas.customers import services
from saas.customers.forms import ContactLogForm, CustomerForm, DecisionMakerForm, PreferenceForm, TransactionForm
from saas.errors import NotFound, ValidationFailed
from saas.extensions import htmx
from saas.formatting import money, number
from saas.forms import add_errors, apply_errors
from saas.loyalty import services as loyalty
from saas.settings import services as settings_services
from saas.web import access, has_role, preselected_location, remember_tablet_location

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


def _refused_as_erased(customer, form) -> bool:
    """For a customer whose personal data was erased: the service's refusal above the form
    (the template shows no form then) and True; nothing is saved. False otherwise."""
    try:
        services.refuse_if_erased(customer)
    except ValidationFailed as exc:
        apply_errors(form, exc)
        return True
    return False


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


def _members(current_id: uuid.UUID | None = None) -> list:
    """The tenant's active members, plus the customer's current owner if since deactivated."""
    s = db.session()
    members = services.active_members(s)
    if current_id is not None and not any(u.id == current_id for u in members):
        from saas.auth.models import User

        user = s.get(User, current_id)
        if user is not None:
            members.append(user)
    return members


def _phone_helpers() -> dict:
    region = g.tenant.country
    return dict(mask_phone=lambda p: services.mask_phone(p, region),
                format_phone=lambda p: services.format_phone(p, region))


def _customer_form(locations, members, **kwargs) -> CustomerForm:
    return CustomerForm(locations=locations, members=members, region=g.tenant.country, **kwargs)


def _default_location(locations: list, customer=None) -> str:
    """The id of the location preselected in a form (saas.web.preselected_location)."""
    entry = preselected_location(locations, customer)
    return str(entry.id) if entry is not None else ""


def _to_card() -> bool:
    """Whether a form opened from the guest card returns there (?return=card)."""
    return request.args.get("return") == "card"


def _back(customer):
    if _to_card():
        return redirect(url_for("customers.guest_card", customer_id=customer.id), 303)
    return redirect(url_for("customers.detail", customer_id=customer.id), 303)


@bp.route("/customers")
@access(Role.staff)
def index():
    query = request.args.get("q", "").strip()[:100]
    page = request.args.get("page", 1, type=int)
    result = services.search_customers(db.session(), query, page, region=g.tenant.country)
    locations = {e.id: e for e in settings_services.list_entries(db.session(), "locations")}
    context = dict(result=result, q=query, locations=locations, full_phone=has_role(Role.manager),
                   **_phone_helpers(), classifications=services.CLASSIFICATIONS)
    if htmx and not htmx.boosted and not htmx.history_restore_request:
        return render_template("customers/_rows.html", **context)
    return render_template("customers/index.html", **context)


@bp.route("/customers/new", methods=["GET", "POST"])
@access(Role.staff)
def new():
    s = db.session()
    form = _customer_form(_active("locations"), _members())
    as_of = clock.today(g.tenant.timezone)
    customer = _save_customer(form, lambda values: services.create_customer(s, values, as_of, g.tenant.country))
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
    return _render_detail(customer)


def _render_detail(customer):
    s = db.session()
    location = None
    if customer.location_id is not None:
        location = settings_services.get_entry(s, "locations", customer.location_id)
    locations = _active("locations")
    preference_form = PreferenceForm(locations=locations, formdata=None)
    preference_form.location_id.data = _default_location(locations, customer)
    decision_form = DecisionMakerForm(region=g.tenant.country, formdata=None)
    preferences, _count = services.list_preferences(s, customer)
    owner_name = services.user_names(s, [customer.owner_user_id]).get(customer.owner_user_id, "")
    return render_template(
        "customers/detail.html", customer=customer, location=location, owner_name=owner_name,
        history=services.transaction_history(s, customer), preferences=preferences,
        contacts=services.contact_history(s, customer), decision_makers=services.list_decision_makers(s, customer),
        preference_form=preference_form, decision_form=decision_form, may_edit_contact=_may_edit_contact,
        **_labels(), **_phone_helpers())


def _may_edit_contact(entry) -> bool:
    return services.may_edit_contact_log(entry, current_user.id, has_role(Role.manager))


def _labels() -> dict:
    return dict(classifications=services.CLASSIFICATIONS, genders=services.GENDERS,
                company_sizes=services.COMPANY_SIZES, categories=services.PREFERENCE_CATEGORIES,
                channels=services.CONTACT_CHANNELS)


@bp.route("/customers/<uuid:customer_id>/edit", methods=["GET", "POST"])
@access(Role.staff)
def edit(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    locations = _with_current(_active("locations"), customer.location_id)
    members = _members(customer.owner_user_id)
    if request.method == "GET":
        form = _customer_form(locations, members, obj=customer)
        form.location_id.data = str(customer.location_id) if customer.location_id else ""
        form.owner_user_id.data = str(customer.owner_user_id) if customer.owner_user_id else ""
        form.external_ref.data = customer.external_ref or ""
        form.card_number.data = customer.card_number or ""
        form.phone.data = services.format_phone(customer.phone, g.tenant.country)
        form.phone_alt.data = services.format_phone(customer.phone_alt, g.tenant.country)
        form.tags.data = ", ".join(customer.tags or [])
    else:
        form = _customer_form(locations, members)
    as_of = clock.today(g.tenant.timezone)

    def update(values):
        return services.update_customer(s, customer, values, as_of, g.tenant.country)

    if not _refused_as_erased(customer, form) and _save_customer(form, update, customer):
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
        form.location_id.data = _default_location(locations, customer)
        form.department_id.data = ""
    if form.validate_on_submit():
        try:
            tx = services.record_transaction(s, customer, form.values(), current_user.id, as_of)
            # The visit earns its points in the same database transaction (refused, with
            # the transaction, for a customer a merge took meanwhile).
            award = loyalty.award(s, tx, customer, current_user.id, as_of)
        except ValidationFailed as exc:
            db.session().rollback()
            _apply_errors(form, exc)
        else:
            flash(_("Transaction of %(amount)s recorded.", amount=money(tx.amount)) + " "
                  + _("Earned %(n)s points; balance %(balance)s.", n=number(award.points),
                      balance=number(award.balance)), "success")
            place = next((e.code for e in locations if e.id == tx.location_id), "")
            return remember_tablet_location(_back(customer), place)
    status = 422 if request.method == "POST" else 200
    return render_template("customers/transaction_form.html", form=form, customer=customer,
                           to_card=_to_card()), status


# --- decision makers, preferences, contact log --------------------------------------------

def _entry_view(customer, form, save, done, title: str, action: str, submit: str):
    """Validate an entry form and ``save(values)``; on success flash ``done(result)`` and go
    back. Otherwise the form on a small page of its own (the guest card's buttons open these;
    an invalid POST from the customer page answers with it too), 422 after a POST. For an
    erased customer nothing new is recorded: the refusal instead of the form."""
    if not _refused_as_erased(customer, form) and form.validate_on_submit():
        try:
            result = save(form.values())
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(done(result), "success")
            return _back(customer)
    status = 422 if request.method == "POST" else 200
    return render_template("customers/entry_form.html", customer=customer, form=form, title=title,
                           action=action, submit=submit, to_card=_to_card()), status


def _action(endpoint: str, customer, **ids) -> str:
    return url_for(endpoint, customer_id=customer.id, **ids, **({"return": "card"} if _to_card() else {}))


@bp.route("/customers/<uuid:customer_id>/decision-makers/new", methods=["GET", "POST"])
@access(Role.staff)
def new_decision_maker(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    form = DecisionMakerForm(region=g.tenant.country)
    return _entry_view(customer, form,
                       lambda values: services.add_decision_maker(s, customer, values, g.tenant.country),
                       lambda contact: _("%(name)s added as a decision maker.", name=contact.name),
                       _("Add a decision maker for %(name)s", name=customer.name),
                       _action("customers.new_decision_maker", customer), _("Add decision maker"))


@bp.route("/customers/<uuid:customer_id>/decision-makers/<uuid:contact_id>/edit", methods=["GET", "POST"])
@access(Role.staff)
def edit_decision_maker(customer_id: uuid.UUID, contact_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    contact = services.get_decision_maker(s, customer, contact_id)
    if request.method == "GET":
        form = DecisionMakerForm(region=g.tenant.country, obj=contact)
        form.phone.data = services.format_phone(contact.phone, g.tenant.country)
    else:
        form = DecisionMakerForm(region=g.tenant.country)
    return _entry_view(customer, form,
                       lambda values: services.update_decision_maker(s, customer, contact.id, values,
                                                                     g.tenant.country),
                       lambda saved: _("Changes to %(name)s saved.", name=saved.name),
                       _("Edit %(name)s", name=contact.name),
                       _action("customers.edit_decision_maker", customer, contact_id=contact.id),
                       _("Save changes"))


@bp.route("/customers/<uuid:customer_id>/decision-makers/<uuid:contact_id>/delete", methods=["POST"])
@access(Role.staff)
def delete_decision_maker(customer_id: uuid.UUID, contact_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    services.remove_decision_maker(s, customer, contact_id)
    flash(_("Decision maker removed."), "success")
    return _back(customer)


@bp.route("/customers/<uuid:customer_id>/preferences/new", methods=["GET", "POST"])
@access(Role.staff)
def new_preference(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    locations = _active("locations")
    form = PreferenceForm(locations=locations)
    if request.method == "GET":
        form.location_id.data = _default_location(locations, customer)
    return _entry_view(customer, form,
                       lambda values: services.add_preference(s, customer, values, current_user.id, clock.now_utc()),
                       lambda pref: _("Preference “%(key)s” saved.", key=pref.key),
                       _("Add a preference for %(name)s", name=customer.name),
                       _action("customers.new_preference", customer), _("Save preference"))


@bp.route("/customers/<uuid:customer_id>/preferences/<uuid:preference_id>/delete", methods=["POST"])
@access(Role.staff)
def delete_preference(customer_id: uuid.UUID, preference_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    services.remove_preference(s, customer, preference_id)
    flash(_("Preference removed."), "success")
    return _back(customer)


@bp.route("/customers/<uuid:customer_id>/contact-log/new", methods=["GET", "POST"])
@access(Role.staff)
def new_contact_log(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    locations = _active("locations")
    form = ContactLogForm(locations=locations)
    if request.method == "GET":
        form.location_id.data = _default_location(locations, customer)
        form.channel.data = "visit" if _to_card() else "call"
        form.occurred_at.data = _local_now()
    return _entry_view(customer, form,
                       lambda values: services.log_contact(s, customer, values, current_user.id, clock.now_utc(),
                                                           g.tenant.timezone),
                       lambda logged: _("Contact logged."),
                       _("Log a contact with %(name)s", name=customer.name),
                       _action("customers.new_contact_log", customer), _("Log contact"))


@bp.route("/customers/<uuid:customer_id>/contact-log/<uuid:entry_id>/edit", methods=["GET", "POST"])
@access(Role.staff)
def edit_contact_log(customer_id: uuid.UUID, entry_id: uuid.UUID):
    """The staff member who logged the contact, or a manager, corrects the entry."""
    s = db.session()
    customer = services.get_customer(s, customer_id)
    entry = services.get_contact_log(s, customer, entry_id)
    if not _may_edit_contact(entry):
        abort(403)
    form = ContactLogForm(locations=_with_current(_active("locations"), entry.location_id))
    if request.method == "GET":
        form.channel.data = entry.channel
        form.occurred_at.data = _local(entry.occurred_at)
        form.outcome.data = entry.outcome
        form.next_step.data = entry.next_step
        form.location_id.data = str(entry.location_id) if entry.location_id else ""
    return _entry_view(customer, form,
                       lambda values: services.update_contact_log(s, customer, entry.id, values, current_user.id,
                                                                  clock.now_utc(), g.tenant.timezone),
                       lambda changes: _("Contact log entry saved."),
                       _("Edit the contact with %(name)s", name=customer.name),
                       _action("customers.edit_contact_log", customer, entry_id=entry.id), _("Save changes"))


def _local(instant):
    """An instant as the minute in the tenant's time zone, naive (what a datetime-local shows)."""
    from zoneinfo import ZoneInfo

    return instant.astimezone(ZoneInfo(g.tenant.timezone)).replace(tzinfo=None, second=0, microsecond=0)


def _local_now():
    """The current minute in the tenant's time zone, naive (what a datetime-local shows)."""
    return _local(clock.now_utc())


# --- the front desk -------------------------------------------------------------------------

FRONTDESK_RESULTS = 8


def _partial() -> bool:
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


@bp.route("/frontdesk")
@access(Role.staff)
def frontdesk():
    query = request.args.get("q", "").strip()[:100]
    result = None
    if query:
        result = services.search_customers(db.session(), query, 1, FRONTDESK_RESULTS, region=g.tenant.country)
    context = dict(q=query, result=result, full_phone=has_role(Role.manager), **_phone_helpers())
    if _partial():
        return render_template("customers/_frontdesk_results.html", **context)
    return render_template("customers/frontdesk.html", card=None, **context)


@bp.route("/frontdesk/<uuid:customer_id>")
@access(Role.staff)
def guest_card(customer_id: uuid.UUID):
    s = db.session()
    customer = services.get_customer(s, customer_id)
    card = services.guest_card(s, customer, clock.today(g.tenant.timezone))
    context = dict(card=card, customer=customer, full_phone=has_role(Role.manager), **_labels(), **_phone_helpers())
    if _partial():
        return render_template("customers/_guest_card.html", **context)
    return render_template("customers/frontdesk.html", q="", result=None, **context)

"""Settings for the tenant's owner: defaults, editable lists, programme set-up, API keys."""
from __future__ import annotations

import uuid
from decimal import Decimal

from babel.numbers import get_currency_name
from flask import Blueprint, abort, flash, g, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from saas import db
from saas.auth.forms import EmptyForm
from saas.auth.models import Role
from saas.errors import ValidationFailed
from saas.formatting import locale_code
from saas.forms import apply_errors
from saas.settings import presets, services
from saas.settings.forms import (
    ENTRY_FORMS,
    ApiKeyForm,
    LoyaltyForm,
    ProgrammeSectionForm,
    TenantDefaultsForm,
)
from saas.web import access

bp = Blueprint("settings", __name__)

# Routing answers 404 for any other list or section name.
KIND = "any(" + ", ".join(f'"{k}"' for k in services.LIST_MODELS) + "):kind"
SECTION = "any(" + ", ".join(f'"{s}"' for s in presets.PROGRAMME_SECTIONS) + "):section"

KIND_TITLES = {
    "locations": _l("Locations"),
    "departments": _l("Departments"),
    "transaction-kinds": _l("Transaction kinds"),
}
KIND_EDIT_TITLES = {
    "locations": _l("Edit location"),
    "departments": _l("Edit department"),
    "transaction-kinds": _l("Edit transaction kind"),
}
KIND_ADD_TITLES = {
    "locations": _l("Add a location"),
    "departments": _l("Add a department"),
    "transaction-kinds": _l("Add a transaction kind"),
}
SECTION_TITLES = {
    "loyalty": _l("Loyalty programme"),
    "churn": _l("Churn rules"),
    "surveys": _l("Surveys"),
    "targets": _l("Satisfaction targets"),
}


def _status(form) -> int:
    # Every successful POST redirects, so a POST that renders the page was refused.
    return 422 if request.method == "POST" else 200


# --- overview and tenant defaults ---------------------------------------------------------

@bp.route("/settings", methods=["GET", "POST"])
@access(Role.owner)
def index():
    tenant = g.tenant
    form = TenantDefaultsForm(data={"business_name": tenant.name, "language": tenant.language,
                                    "timezone": tenant.timezone, "currency": tenant.currency,
                                    "country": tenant.country})
    if form.validate_on_submit():
        try:
            services.update_tenant_defaults(db.session(), tenant, form.business_name.data, form.language.data,
                                            form.timezone.data, form.currency.data, form.country.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("The business settings have been saved."), "success")
            return redirect(url_for("settings.index"), 303)
    return render_template("settings/index.html", form=form, kind_titles=KIND_TITLES,
                           section_titles=SECTION_TITLES), _status(form)


# --- editable lists: locations, departments, transaction kinds ----------------------------

@bp.route(f"/settings/<{KIND}>", methods=["GET", "POST"])
@access(Role.owner)
def entries(kind: str):
    s = db.session()
    form = ENTRY_FORMS[kind]()
    if form.validate_on_submit():
        try:
            # A new entry starts active; it is deactivated later from its edit page.
            entry = services.save_entry(s, kind, {**form.entry_data(), "active": True})
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("%(name)s has been added.", name=entry.name_for(locale_code())), "success")
            return redirect(url_for("settings.entries", kind=kind), 303)
    return render_template("settings/entries.html", kind=kind, title=KIND_TITLES[kind],
                           add_title=KIND_ADD_TITLES[kind], form=form,
                           entries=services.list_entries(s, kind)), _status(form)


@bp.route(f"/settings/<{KIND}>/<uuid:entry_id>", methods=["GET", "POST"])
@access(Role.owner)
def edit_entry(kind: str, entry_id: uuid.UUID):
    s = db.session()
    entry = services.get_entry(s, kind, entry_id)
    form = ENTRY_FORMS[kind](obj=entry)
    if form.validate_on_submit():
        try:
            services.save_entry(s, kind, form.entry_data(), existing=entry)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("%(name)s has been saved.", name=entry.name_for(locale_code())), "success")
            return redirect(url_for("settings.entries", kind=kind), 303)
    return render_template("settings/entry_edit.html", kind=kind, title=KIND_EDIT_TITLES[kind],
                           list_title=KIND_TITLES[kind], entry=entry, form=form), _status(form)


# --- programme set-up ----------------------------------------------------------------------

@bp.route("/settings/programme")
@access(Role.owner)
def programme():
    s = db.session()
    departments = {d.code: d for d in services.list_entries(s, "departments")}
    return render_template("settings/programme.html", sections=services.programme_sections(s),
                           section_titles=SECTION_TITLES, departments=departments)


@bp.route(f"/settings/programme/<{SECTION}>", methods=["GET", "POST"])
@access(Role.owner)
def edit_programme(section: str):
    s = db.session()
    form = ProgrammeSectionForm()
    if request.method == "GET":
        form.text.data = services.programme_section_text(s, section)
    if form.validate_on_submit():
        try:
            services.update_programme_section(s, section, form.text.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("%(section)s has been saved.", section=SECTION_TITLES[section]), "success")
            return redirect(url_for("settings.programme"), 303)
    extra = {}
    if section == "loyalty":
        extra = _loyalty_preview(request.args if request.method == "GET" else {})
        extra.update(_loyalty_summary_names(db.session()))
    status = _status(form)
    if extra.get("preview_errors"):
        status = 422
    return render_template("settings/programme_edit.html", section=section, title=SECTION_TITLES[section],
                           form=form, **extra), status


def _loyalty_preview(args) -> dict:
    """What the saved loyalty programme gives: the points a sample amount of a kind earns
    at each tier (services.earning_preview), and the programme itself for the summary."""
    from saas.customers.services import default_kind
    from saas.loyalty import services as loyalty

    s = db.session()
    programme = loyalty.programme_of(s)
    all_kinds = services.list_entries(s, "transaction-kinds")
    kinds = [k for k in all_kinds if k.active]
    default = default_kind(s)
    kind_code = str(args.get("kind") or (default.code if default else ""))[:40]
    amount_raw = str(args["amount"] if "amount" in args else _sample_amount(programme, kind_code))[:30]
    errors: dict = {}
    amount = None
    try:
        amount = loyalty.parse_decimal(amount_raw, "amount")
    except ValidationFailed as exc:
        errors.update(exc.errors)
    kind = next((k for k in kinds if k.code == kind_code), None)
    if kind is None and kinds:
        errors["kind"] = [_l("Choose one of the listed values.")]
    departments = [d for d in services.list_entries(s, "departments") if d.active]
    department_code = str(args.get("department") or "")[:40]
    department = next((d for d in departments if d.code == department_code), None)
    if department_code and department is None:
        errors["department"] = [_l("Choose one of the listed values.")]
    preview = (loyalty.earning_preview(programme, amount, kind.code if kind else "",
                                       department.code if department else "") if not errors else [])
    return dict(programme=programme, kinds=kinds, preview=preview, preview_kind=kind, preview_amount=amount,
                amount_raw=amount_raw, kind_code=kind_code, preview_errors=errors,
                kind_names={k.code: k for k in all_kinds}, preview_departments=departments,
                department_code=department_code, preview_department=department)


def _sample_amount(programme, kind_code: str) -> str:
    """The preview's first amount: ¥1,280 (a hotel night), or where the kind earns less
    than 100 points from it (a bank's 1 point per ¥1,000), what earns 100."""
    rate = programme.rate_for(kind_code, "")
    if rate <= 0 or 1280 * rate >= 100 or 100 / rate > 100_000_000:  # (at most what the preview reads)
        return "1280"
    return str((100 / rate).quantize(Decimal(1)))


def _loyalty_summary_names(s) -> dict:
    """The departments and locations the programme summary names by code (the preview
    fragment alone does not show them)."""
    return {"departments": {d.code: d for d in services.list_entries(s, "departments")},
            "locations": {loc.code: loc for loc in services.list_entries(s, "locations")}}


@bp.route("/settings/programme/loyalty/preview")
@access(Role.owner)
def programme_preview():
    context = _loyalty_preview(request.args)
    return render_template("settings/_loyalty_preview.html", **context), 422 if context["preview_errors"] else 200


@bp.route("/settings/programme/loyalty/form", methods=["GET", "POST"])
@access(Role.owner)
def loyalty_form():
    """The everyday keys of the loyalty programme as a form; the keys it does not show
    (earning rates, flat points, department multipliers, promotions) stay as saved."""
    from saas.loyalty import services as loyalty

    s = db.session()
    if request.method == "GET":
        form = LoyaltyForm.from_programme(loyalty.programme_of(s))
    else:
        form = LoyaltyForm()
        if form.validate_on_submit():
            data = form.section_data(services.programme_section_data(s, "loyalty"))
            if data is not None:
                try:
                    services.update_programme_section_data(s, "loyalty", data)
                except ValidationFailed as exc:
                    form.place_problems([m for messages in exc.errors.values() for m in messages])
                else:
                    flash(_("%(section)s has been saved.", section=SECTION_TITLES["loyalty"]), "success")
                    return redirect(url_for("settings.edit_programme", section="loyalty"), 303)
    # The saved programme's preview beside the form (what a save would change: see it after saving).
    preview = _loyalty_preview(request.args if request.method == "GET" else {})
    return render_template("settings/loyalty_form.html", form=form, title=SECTION_TITLES["loyalty"],
                           currency=get_currency_name(g.tenant.currency, locale=locale_code()),
                           **preview), _status(form)


# --- API keys --------------------------------------------------------------------------------

@bp.route("/settings/api-keys", methods=["GET", "POST"])
@access(Role.owner)
def api_keys():
    s = db.session()
    form = ApiKeyForm()
    new_key = None
    if form.validate_on_submit():
        try:
            key, new_key = services.create_api_key(s, form.name.data, current_user.id)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("API key “%(name)s” created.", name=key.name), "success")
            form = ApiKeyForm(formdata=None)
    status = 422 if form.errors or form.form_errors else 200
    resp = make_response(render_template("settings/api_keys.html", form=form, keys=services.list_api_keys(s),
                                          new_key=new_key, action_form=EmptyForm()), status)
    if new_key is not None:
        # The full key is on this page only: keep it out of every cache and history store.
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/settings/api-keys/<uuid:key_id>/revoke", methods=["POST"])
@access(Role.owner)
def revoke_api_key(key_id: uuid.UUID):
    s = db.session()
    key = services.get_api_key(s, key_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    services.revoke_api_key(s, key.id)
    flash(_("API key “%(name)s” revoked. Systems using it can no longer connect.", name=key.name), "info")
    return redirect(url_for("settings.api_keys"), 303)

"""Importing customers and transactions from CSV/XLSX, and exporting them.

Import: upload (/imports) -> map columns (/imports/<id>/mapping) -> preview with a dry run
(/imports/<id>/preview) -> run (POST /imports/<id>/run) in a background thread -> status
page with a progress bar polled by htmx (/imports/<id>, /imports/<id>/progress) -> errors
as CSV (/imports/<id>/errors.csv). With ``app.config["IMPORTS_RUN_INLINE"]`` the run
happens inside the request instead of a thread (tests use it).

Export: POST /customers/export.csv|xlsx (q as in the customer list) and
POST /transactions/export.csv|xlsx (from, to, kind, location, q = a customer reference),
each recorded in the audit log.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, SelectField, ValidationError

from saas import clock, db
from saas.auth.models import Role
from saas.customers import imports, records
from saas.db import bind_tenant
from saas.errors import ValidationFailed
from saas.formatting import locale_code
from saas.extensions import htmx
from saas.forms import add_errors, apply_errors, listed
from saas.web import access

bp = Blueprint("imports", __name__)
log = logging.getLogger(__name__)

KIND_LABELS = {"customers": _l("Customers"), "transactions": _l("Transactions")}
STATUS_LABELS = {"uploaded": _l("Not started"), "running": _l("Running"), "done": _l("Done"),
                 "failed": _l("Not imported")}


class UploadForm(FlaskForm):
    kind = SelectField(_l("What the file holds"), choices=[(k, v) for k, v in KIND_LABELS.items()], **listed())
    file = FileField(_l("CSV or XLSX file"))


class RunForm(FlaskForm):
    dedupe_by = SelectField(_l("Find existing records by"), **listed())
    skip_failing = BooleanField(_l("Skip the failing rows and import the rest"))


def _column_choice(form, field):
    # An omitted select means "not in the file"; anything else must be one of the columns.
    if field.data not in (None, "") and field.data not in {str(c[0]) for c in field.choices or []}:
        raise ValidationError(_l("Choose one of the listed values."))


def _mapping_form(job, data=None):
    """A form with one select per field of the job's kind: the file's columns to choose."""
    headers = job.options.get("headers", [])
    choices = [("", _l("— not in the file —"))] + [(h, h) for h in headers if h]

    class MappingForm(FlaskForm):
        pass

    for name, spec in imports.FIELDS[job.kind].items():
        label = _l("%(field)s (required)", field=spec.label) if spec.required else spec.label
        setattr(MappingForm, name, SelectField(label, choices=choices, validate_choice=False,
                                               validators=[_column_choice]))
    return MappingForm(data=data) if data is not None else MappingForm()


def _as_of():
    return clock.today(g.tenant.timezone)


def _job(job_id: uuid.UUID, with_content: bool = True):
    return imports.get_job(db.session(), job_id, with_content)


# --- import -----------------------------------------------------------------------------

@bp.route("/imports", methods=["GET", "POST"])
@access(Role.manager)
def index():
    s = db.session()
    form = UploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        if upload is None or not getattr(upload, "filename", ""):
            add_errors(form, "file", [_("Choose a file.")])
        else:
            content = upload.read(imports.MAX_FILE_BYTES + 1)
            try:
                job = imports.create_job(s, form.kind.data, upload.filename, content, current_user.id)
            except ValidationFailed as exc:
                s.rollback()
                apply_errors(form, exc)
            else:
                return redirect(url_for("imports.mapping", job_id=job.id), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("imports/index.html", form=form, jobs=imports.recent_jobs(s), kinds=KIND_LABELS,
                           statuses=STATUS_LABELS, kind_codes=_codes("transaction-kinds"),
                           location_codes=_codes("locations")), status


# --- who exported what --------------------------------------------------------------------

EXPORT_LOG_ROWS = 100
EXPORT_WHAT = {"customers_list": _l("Customer list"), "transactions_list": _l("Transaction list"),
               "customer": _l("One customer's data")}
EXPORT_FILTERS = {"q": _l("Search"), "from": _l("From date"), "to": _l("To date"), "kind": _l("Kind"),
                  "location": _l("Location")}


@bp.route("/imports/exports")
@access(Role.manager)
def export_log():
    """Every export of personal data (lists and one customer's data), newest first, with
    who exported it, the format, the filters and the rows: what the audit log keeps."""
    s = db.session()
    before = None
    raw = request.args.get("before", "")
    if raw:
        try:
            before = dt.datetime.fromisoformat(raw)
        except ValueError:
            before = None
        if before is not None and before.tzinfo is None:
            before = before.replace(tzinfo=dt.timezone.utc)
    rows = records.export_log(s, EXPORT_LOG_ROWS, before)
    older = (url_for("imports.export_log", before=rows[-1].entry.created_at.isoformat())
             if len(rows) == EXPORT_LOG_ROWS else None)
    # The kind and location filters are stored as codes; shown by their names.
    names = {"kind": {e.code: e.name_for(locale_code()) for e in _codes("transaction-kinds")},
             "location": {e.code: e.name_for(locale_code()) for e in _codes("locations")}}
    return render_template("imports/export_log.html", rows=rows, what=EXPORT_WHAT, filter_labels=EXPORT_FILTERS,
                           filter_values=names, older=older, first_page=before is None)


def _codes(kind: str) -> list:
    from saas.settings import services as settings_services

    return settings_services.list_entries(db.session(), kind)


@bp.route("/imports/<uuid:job_id>/mapping", methods=["GET", "POST"])
@access(Role.manager)
def mapping(job_id: uuid.UUID):
    s = db.session()
    job = _job(job_id)
    if job.status == "running":
        return redirect(url_for("imports.job", job_id=job.id), 303)
    if request.method == "POST":
        form = _mapping_form(job)
        if form.validate_on_submit():
            chosen = {name: getattr(form, name).data or "" for name in imports.FIELDS[job.kind]}
            try:
                imports.set_mapping(s, job, chosen)
            except ValidationFailed as exc:
                apply_errors(form, exc)
            else:
                return redirect(url_for("imports.preview", job_id=job.id), 303)
        status = 422
    else:
        current = job.options.get("mapping", {})
        form = _mapping_form(job, {name: current.get(name, "") for name in imports.FIELDS[job.kind]})
        status = 200
    return render_template("imports/mapping.html", job=job, form=form, kinds=KIND_LABELS,
                           fields=imports.FIELDS[job.kind]), status


def _run_form(job, data=None):
    form = RunForm(data=data) if data is not None else RunForm()
    form.dedupe_by.choices = [(k, label) for k, (label, _col) in imports.DEDUPE_CHOICES[job.kind].items()]
    return form


def _render_preview(job, form, status=200):
    dedupe_by = form.dedupe_by.data if form.dedupe_by.data in imports.DEDUPE_CHOICES[job.kind] \
        else next(iter(imports.DEDUPE_CHOICES[job.kind]))
    result = imports.preview(db.session(), job, dedupe_by, _as_of())
    return render_template("imports/preview.html", job=job, form=form, preview=result, kinds=KIND_LABELS), status


@bp.route("/imports/<uuid:job_id>/preview")
@access(Role.manager)
def preview(job_id: uuid.UUID):
    job = _job(job_id)
    if job.status == "running":
        return redirect(url_for("imports.job", job_id=job.id), 303)
    dedupe_by = request.args.get("dedupe_by") or job.options.get("dedupe_by")
    form = _run_form(job, {"dedupe_by": dedupe_by, "skip_failing": bool(job.options.get("skip_failing"))})
    return _render_preview(job, form)


@bp.route("/imports/<uuid:job_id>/run", methods=["POST"])
@access(Role.manager)
def run(job_id: uuid.UUID):
    s = db.session()
    job = _job(job_id)
    form = _run_form(job)
    if not form.validate_on_submit():
        return _render_preview(job, form, 422)
    if not job.options.get("mapping"):
        return redirect(url_for("imports.mapping", job_id=job.id), 303)
    if imports.start_job(s, job, form.dedupe_by.data, form.skip_failing.data):
        # The thread reads the job in its own session: it must see the options and the
        # running status committed.
        s.commit()
        database = db.get_db()
        args = (database, g.tenant.id, job.id, _as_of())
        if current_app.config.get("IMPORTS_RUN_INLINE"):
            imports.run_job(*args)
        else:
            threading.Thread(target=imports.run_job, args=args, name=f"import-{job.id}", daemon=True).start()
    return redirect(url_for("imports.job", job_id=job.id), 303)


def _job_context(job):
    done, total = imports.job_progress(job)
    percent = 100 if job.status in ("done", "failed") else (int(done * 100 / total) if total else 0)
    return dict(job=job, done=done, total=total, percent=min(percent, 100), kinds=KIND_LABELS,
                statuses=STATUS_LABELS, errors=imports.job_errors(job)[:100], error_count=len(job.errors or []))


@bp.route("/imports/<uuid:job_id>")
@access(Role.manager)
def job(job_id: uuid.UUID):
    return render_template("imports/job.html", **_job_context(_job(job_id, with_content=False)))


@bp.route("/imports/<uuid:job_id>/progress")
@access(Role.manager)
def progress(job_id: uuid.UUID):
    context = _job_context(_job(job_id, with_content=False))
    if htmx and context["job"].status in ("done", "failed"):
        # The run ended: show the whole result page (with its counts and errors).
        resp = Response(status=200)
        resp.headers["HX-Refresh"] = "true"
        return resp
    return render_template("imports/_progress.html", **context)


@bp.route("/imports/<uuid:job_id>/errors.csv")
@access(Role.manager)
def errors_csv(job_id: uuid.UUID):
    job = _job(job_id, with_content=False)
    text = imports.errors_csv(imports.job_errors(job), [_("Row"), _("Column"), _("Message")])
    name = f"errors-{job.id}.csv"
    return Response(text, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


# --- export -----------------------------------------------------------------------------
# An export is a POST from the export form (with its CSRF token), not a GET: each one writes
# an audit entry (who, when, which list, the filters, the rows), and a GET - which a
# prefetcher, a crawler or another site's <img> can make the browser send - must change
# nothing. The rows are read in a read-only session of their own; the audit entry is
# written in the request's transaction, so it is committed before the first byte is sent.

class _Counted:
    """Passes an export's rows through, counting the rows after the header."""

    def __init__(self, rows):
        self.rows = rows
        self.count = 0

    def __iter__(self):
        for i, row in enumerate(self.rows):
            if i:
                self.count += 1
            yield row


def _read_session():
    s = db.get_db().new_session(read_only=True)
    bind_tenant(s, g.tenant.id)
    return s


def _audit(what: str, file_format: str, filters: dict, rows: int | None = None):
    return records.audit_list_export(db.session(), current_user.id, what, file_format, filters, rows,
                                     clock.now_utc())


def _record_rows(database, tenant_id: uuid.UUID, audit_id: uuid.UUID, rows: int) -> None:
    """Fill in the row count of an export whose file was sent in full, in a short write
    session (the request and its transaction ended when the stream began). A failure is
    logged, not raised: the file is out, and its audit entry already says who exported
    what with which filters."""
    s = database.new_session()
    try:
        bind_tenant(s, tenant_id)
        records.set_export_rows(s, audit_id, rows)
        s.commit()
    except Exception:
        s.rollback()
        log.exception("could not record the row count of export %s", audit_id)
    finally:
        s.close()


def _csv_response(what: str, filters: dict, export, name: str) -> Response:
    """Audit the export, then stream ``export(session)``'s rows as CSV. The rows come from a
    session of their own (bound to the tenant), not the request's: the stream outlives the
    request, and an abandoned download must not keep a request context or a transaction
    alive. The row count is recorded when the whole file was sent."""
    entry = _audit(what, "csv", filters)
    database, tenant_id = db.get_db(), g.tenant.id
    s = _read_session()
    rows = _Counted(export(s))

    def body():
        try:
            for chunk in imports.csv_lines(rows):
                yield chunk.encode("utf-8")
        finally:
            s.close()
        _record_rows(database, tenant_id, entry.id, rows.count)

    return Response(body(), mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _xlsx_response(what: str, filters: dict, export, name: str, title: str) -> Response:
    s = _read_session()
    try:
        rows = _Counted(export(s))
        content = imports.xlsx_bytes(rows, title)
    finally:
        s.close()
    _audit(what, "xlsx", filters, rows.count)
    return Response(content, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _stamp() -> str:
    return _as_of().isoformat()


def _customer_filters() -> dict:
    return {"q": (request.form.get("q") or "").replace("\x00", "").strip()[:100]}


def _transaction_filters() -> tuple[imports.TransactionFilters, dict]:
    """The parsed filters (ValidationFailed -> 422, nothing recorded) and as the audit keeps them."""
    f = imports.parse_transaction_filters(db.session(), request.form)
    return f, {"from": f.date_from.isoformat() if f.date_from else "", "to": f.date_to.isoformat() if f.date_to else "",
               "kind": f.kind, "location": f.location, "q": f.q}


@bp.route("/customers/export.csv", methods=["POST"])
@access(Role.manager)
def export_customers_csv():
    filters = _customer_filters()
    return _csv_response("customers", filters, lambda s: imports.export_customers(s, filters["q"]),
                         f"customers-{_stamp()}.csv")


@bp.route("/customers/export.xlsx", methods=["POST"])
@access(Role.manager)
def export_customers_xlsx():
    filters = _customer_filters()
    return _xlsx_response("customers", filters, lambda s: imports.export_customers(s, filters["q"]),
                          f"customers-{_stamp()}.xlsx", "Customers")


@bp.route("/transactions/export.csv", methods=["POST"])
@access(Role.manager)
def export_transactions_csv():
    f, filters = _transaction_filters()
    return _csv_response("transactions", filters, lambda s: imports.export_transactions(s, f),
                         f"transactions-{_stamp()}.csv")


@bp.route("/transactions/export.xlsx", methods=["POST"])
@access(Role.manager)
def export_transactions_xlsx():
    f, filters = _transaction_filters()
    return _xlsx_response("transactions", filters, lambda s: imports.export_transactions(s, f),
                          f"transactions-{_stamp()}.xlsx", "Transactions")

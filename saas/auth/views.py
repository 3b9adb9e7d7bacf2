"""Sign-up, login, logout, tenant choice, passwords, language, staff and invitations."""
from __future__ import annotations

import uuid

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session as flask_session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import refresh
from flask_login import current_user, login_user, logout_user
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from saas import LANGUAGES, db
from saas.auth import services
from saas.auth.forms import (
    AcceptInvitationForm,
    ChangePasswordForm,
    EmptyForm,
    ForgotPasswordForm,
    InviteForm,
    LoginForm,
    ResetPasswordForm,
    SignupForm,
)
from saas.auth.models import Role, Tenant, User
from saas.errors import ValidationFailed
from saas.extensions import limiter, login_manager
from saas.formatting import locale_code
from saas.forms import apply_errors
from saas.mail import send_mail
from saas.web import LOGIN, PUBLIC, access

bp = Blueprint("auth", __name__)


@login_manager.user_loader
def _load_user(token: str) -> User | None:
    return db.session().scalar(select(User).where(User.session_token == token))


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def _start_session(user: User, remember: bool, tenant_id: uuid.UUID | None = None) -> None:
    """Log in with a fresh session (rotation: nothing from before the login survives)."""
    lang = flask_session.get("lang")
    flask_session.clear()
    if lang:
        flask_session["lang"] = lang
    login_user(user, remember=remember)
    if tenant_id is None:
        memberships = services.active_memberships(db.session(), user.id)
        if len(memberships) == 1:
            tenant_id = memberships[0][0].tenant_id
    if tenant_id is not None:
        flask_session["tenant_id"] = str(tenant_id)
        g.tenant = db.session().get(Tenant, tenant_id)
    # The rest of this request (its flash messages) speaks the new user's language.
    refresh()


def _safe_next(target: str | None) -> str | None:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@bp.route("/signup", methods=["GET", "POST"])
@access(PUBLIC)
def signup():
    form = SignupForm()
    if request.method == "GET":
        form.language.data = locale_code()
    if form.validate_on_submit():
        s = db.session()
        try:
            tenant, user = services.create_tenant(
                s, name=form.business_name.data, industry=form.industry.data,
                owner_name=form.owner_name.data, owner_email=form.email.data,
                password=form.password.data, language=form.language.data,
                timezone=form.timezone.data, currency=form.currency.data)
        except ValidationFailed as exc:
            s.rollback()
            apply_errors(form, exc)
        else:
            if user.language is None:
                user.language = form.language.data
            _start_session(user, remember=False, tenant_id=tenant.id)
            flash(_("Welcome! Your business is set up from the %(industry)s preset.",
                    industry=dict(form.industry.choices)[tenant.industry]), "success")
            return redirect(url_for("dashboard.index"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/signup.html", form=form), status


def _account_key() -> str:
    return "account:" + services.normalise_email(request.form.get("email", ""))


def _login_failed(response) -> bool:
    return bool(g.get("login_failed"))


@bp.route("/login", methods=["GET", "POST"])
@access(PUBLIC)
@limiter.limit(lambda: current_app.config["LOGIN_FAILURES_PER_ACCOUNT"], key_func=_account_key,
               methods=["POST"], deduct_when=_login_failed, scope="login-account")
@limiter.limit(lambda: current_app.config["LOGIN_FAILURES_PER_IP"], methods=["POST"],
               deduct_when=_login_failed, scope="login-ip")
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = services.authenticate(db.session(), form.email.data, form.password.data)
        if user is None:
            g.login_failed = True
            form.form_errors.append(_("The email or password is wrong, or your access has been deactivated."))
        else:
            _start_session(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")) or url_for("dashboard.index"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@access(LOGIN)
def logout():
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    # A new token invalidates this and every other session and remember cookie.
    services.rotate_session_token(db.session(), current_user._get_current_object())
    logout_user()
    flask_session.clear()
    flash(_("You have logged out."), "info")  # still in the user's language (cached for the request)
    return redirect(url_for("auth.login"), 303)


@bp.route("/choose-business", methods=["GET", "POST"])
@access(LOGIN)
def choose_tenant():
    s = db.session()
    memberships = services.active_memberships(s, current_user.id)
    if request.method == "POST":
        form = EmptyForm()
        if not form.validate_on_submit():
            abort(400)
        try:
            chosen = uuid.UUID(request.form.get("tenant", ""))
        except ValueError:
            abort(404)
        if not any(m.tenant_id == chosen for m, _t in memberships):
            abort(404)
        flask_session["tenant_id"] = str(chosen)
        return redirect(url_for("dashboard.index"), 303)
    if not memberships:
        logout_user()
        flask_session.clear()
        flash(_("You are not an active member of any business."), "error")
        return redirect(url_for("auth.login"))
    return render_template("auth/choose_tenant.html", memberships=memberships, form=EmptyForm())


@bp.route("/forgot-password", methods=["GET", "POST"])
@access(PUBLIC)
@limiter.limit("20 per hour", methods=["POST"], scope="forgot-password")
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        user = services.find_user(db.session(), form.email.data)
        if user is not None:
            token = _serializer("password-reset").dumps(
                {"u": str(user.id), "f": services.password_fingerprint(user)})
            link = url_for("auth.reset_password", token=token, _external=True)
            send_mail(user.email, _("Reset your Huitou password"),
                      _("Open this link within an hour to choose a new password:\n\n%(link)s\n\n"
                        "If you did not ask for this, ignore this mail.", link=link))
        # Same answer whether or not the email is known (no account enumeration).
        flash(_("If the address has an account, a reset link is on its way."), "info")
        return redirect(url_for("auth.login"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/forgot_password.html", form=form), status


def _user_from_reset_token(token: str) -> User | None:
    try:
        data = _serializer("password-reset").loads(token, max_age=current_app.config["PASSWORD_RESET_MAX_AGE"])
        uid = uuid.UUID(data["u"])
    except (BadSignature, KeyError, ValueError, TypeError):
        return None
    user = db.session().get(User, uid)
    if user is None or services.password_fingerprint(user) != data.get("f"):
        return None
    return user


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@access(PUBLIC)
def reset_password(token: str):
    user = _user_from_reset_token(token)
    if user is None:
        flash(_("This reset link is invalid, expired or already used. Ask for a new one."), "error")
        return redirect(url_for("auth.forgot_password"))
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            services.set_password(db.session(), user, form.password.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            if current_user.is_authenticated:
                logout_user()
            flask_session.clear()
            flash(_("Your password has been changed. Log in with the new one."), "success")
            return redirect(url_for("auth.login"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/reset_password.html", form=form), status


@bp.route("/account", methods=["GET", "POST"])
@access(LOGIN)
def account():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            services.change_password(db.session(), user, form.current_password.data, form.new_password.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            # Every older session is now invalid; keep this one by logging in afresh.
            _start_session(user, remember=False, tenant_id=g.tenant.id if g.get("tenant") else None)
            flash(_("Your password has been changed. Other devices have been logged out."), "success")
            return redirect(url_for("auth.account"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/account.html", form=form), status


@bp.route("/language", methods=["POST"])
@access(PUBLIC)
def set_language():
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    lang = request.form.get("lang")
    if lang not in LANGUAGES:
        abort(400)
    flask_session["lang"] = lang
    if current_user.is_authenticated:
        current_user.language = lang
    return redirect(_safe_next(request.form.get("next")) or url_for("dashboard.index"), 303)


# --- staff and invitations (owner) --------------------------------------------------------

def _invitation_link(inv) -> str:
    token = _serializer("invitation").dumps({"t": str(inv.tenant_id), "i": str(inv.id)})
    return url_for("auth.accept_invitation", token=token, _external=True)


@bp.route("/settings/staff", methods=["GET", "POST"])
@access(Role.owner)
def staff():
    s = db.session()
    form = InviteForm()
    new_link = None
    if form.validate_on_submit():
        try:
            inv = services.create_invitation(s, form.email.data, form.role.data, current_user,
                                             current_app.config["INVITATION_MAX_AGE_DAYS"])
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            new_link = _invitation_link(inv)
            send_mail(inv.email, _("You are invited to %(name)s on Huitou", name=g.tenant.name),
                      _("%(who)s invites you to work in %(name)s on Huitou. Open this link to join:\n\n%(link)s",
                        who=current_user.name, name=g.tenant.name, link=new_link))
            flash(_("Invitation created. Send this one-time link to %(email)s.", email=inv.email), "success")
            form = InviteForm(formdata=None)
    status = 422 if form.errors else 200
    from saas.customers import records

    return render_template("auth/staff.html", form=form, members=services.list_members(s),
                           invitations=services.list_invitations(s), new_link=new_link,
                           action_form=EmptyForm(), owned_counts=records.owned_customer_counts(s)), status


def _member_action(membership_id: uuid.UUID, apply):
    s = db.session()
    m = services.get_membership(s, membership_id)
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        apply(s, m)
    except ValidationFailed as exc:
        s.rollback()
        flash(" ".join(str(x) for v in exc.errors.values() for x in v), "error")
    return redirect(url_for("auth.staff"), 303)


@bp.route("/settings/staff/<uuid:membership_id>/deactivate", methods=["POST"])
@access(Role.owner)
def deactivate_member(membership_id):
    from saas.customers import records

    response = _member_action(membership_id, lambda s, m: services.set_member_active(s, m, False, current_user.id))
    s = db.session()
    m = services.get_membership(s, membership_id)
    # Customers leave with the salesperson unless someone else takes them over: ask now.
    if not m.active and records.owned_customer_count(s, m.user_id):
        return redirect(url_for("records.reassign", membership_id=m.id), 303)
    return response


@bp.route("/settings/staff/<uuid:membership_id>/activate", methods=["POST"])
@access(Role.owner)
def activate_member(membership_id):
    return _member_action(membership_id, lambda s, m: services.set_member_active(s, m, True, current_user.id))


@bp.route("/settings/staff/<uuid:membership_id>/role", methods=["POST"])
@access(Role.owner)
def change_role(membership_id):
    return _member_action(membership_id,
                          lambda s, m: services.set_member_role(s, m, request.form.get("role", ""), current_user.id))


@bp.route("/settings/invitations/<uuid:invitation_id>/revoke", methods=["POST"])
@access(Role.owner)
def revoke_invitation(invitation_id):
    s = db.session()
    inv = services.get_invitation(s, invitation_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    services.revoke_invitation(s, inv)
    flash(_("Invitation revoked."), "info")
    return redirect(url_for("auth.staff"), 303)


@bp.route("/invite/<token>", methods=["GET", "POST"])
@access(PUBLIC)
def accept_invitation(token: str):
    s = db.session()
    try:
        data = _serializer("invitation").loads(token, max_age=current_app.config["INVITATION_MAX_AGE_DAYS"] * 86400)
        tid, iid = uuid.UUID(data["t"]), uuid.UUID(data["i"])
    except (BadSignature, KeyError, ValueError, TypeError):
        tid = iid = None
    inv = services.open_invitation(s, tid, iid) if tid else None
    if inv is None:
        return render_template("auth/invitation_invalid.html"), 404

    tenant = s.get(Tenant, inv.tenant_id)
    existing = services.find_user(s, inv.email)
    form = AcceptInvitationForm()
    if form.validate_on_submit():
        try:
            user = services.accept_invitation(s, inv, form.name.data, form.password.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            if current_user.is_authenticated:
                logout_user()
            _start_session(user, remember=False, tenant_id=tenant.id)
            flash(_("Welcome to %(name)s.", name=tenant.name), "success")
            return redirect(url_for("dashboard.index"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/accept_invitation.html", form=form, invitation=inv, tenant=tenant,
                           existing=existing is not None), status

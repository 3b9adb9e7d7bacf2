"""Sign-up, login, sessions, passwords, invitations and staff management."""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from saas.auth.models import Invitation, Membership, Tenant, User
from saas.settings.models import Department, ProgrammeSection, TransactionKind
from tests.conftest import PASSWORD, login

GOOD = {"business_name": "Harbour Hotel", "industry": "hotel", "owner_name": "Li Wei",
        "email": "li@example.com", "password": PASSWORD, "language": "en",
        "timezone": "Asia/Shanghai", "currency": "CNY"}


def count(app, model):
    s = app.extensions["huitou_db"].new_session(all_tenants=True)
    try:
        return s.scalar(select(func.count()).select_from(model))
    finally:
        s.close()


def test_signup_configures_tenant_from_preset(app, client, tenant_session):
    r = client.post("/signup", data={**GOOD, "industry": "dealership"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/dashboard")
    r = client.get("/dashboard")
    assert r.status_code == 200 and "Harbour Hotel" in r.text
    s = app.extensions["huitou_db"].new_session()
    tenant = s.scalar(select(Tenant))
    s.close()
    s = tenant_session(tenant)
    codes = set(s.scalars(select(Department.code)))
    assert {"sales", "after-sales", "customer-service"} <= codes
    assert s.scalar(select(TransactionKind.code).where(TransactionKind.is_default.is_(True))) == "service-visit"
    assert set(s.scalars(select(ProgrammeSection.section))) == {"loyalty", "churn", "surveys", "targets"}
    assert s.scalar(select(Membership.role)) == "owner"


@pytest.mark.parametrize("field,value,message", [
    ("business_name", "", "This field is required."),
    ("industry", "spaceship", "Choose one of the listed values."),
    ("password", "short", "Use at least 10 characters."),
    ("password", "1234567890", "This password is too easy to guess."),
    ("email", "not-an-email", "Enter a valid email address."),
    ("business_name", "x" * 121, "At most 120 characters."),
    ("owner_name", "<script>alert(1)</script>", "Use plain text"),
    ("business_name", "<b>Bold</b> Hotel", "Use plain text"),
    ("timezone", "Mars/Olympus", "Choose one of the listed values."),
    ("currency", "XXX", "Choose one of the listed values."),
])
def test_signup_bad_input_keeps_values_and_writes_nothing(app, client, field, value, message):
    data = {**GOOD, field: value}
    r = client.post("/signup", data=data)
    assert r.status_code == 422
    page = html.unescape(r.text)
    assert message in page
    if field not in ("password", "industry", "timezone", "currency"):
        assert value in page  # the typed value is kept (escaped in the HTML)
    assert "<script>alert(1)</script>" not in r.text
    assert count(app, Tenant) == 0 and count(app, User) == 0


def test_signup_with_existing_email_is_refused(app, client, make_tenant):
    make_tenant(email="li@example.com")
    r = client.post("/signup", data={**GOOD, "password": "another password 1"})
    assert r.status_code == 422
    assert "This email already has an account" in r.text
    assert count(app, Tenant) == 1


def test_signup_bad_input_in_chinese(app, client):
    r = client.post("/signup", data={**GOOD, "language": "zh_CN", "business_name": ""},
                    headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 422
    assert "此项为必填项" in r.text


def test_login_logout_and_wrong_password(client, make_tenant):
    _tenant, user = make_tenant()
    r = login(client, user.email, "wrong password!!")
    assert r.status_code == 422 and "The email or password is wrong" in r.text
    assert client.get("/dashboard").status_code == 302
    assert login(client, user.email).status_code == 303
    assert client.get("/dashboard").status_code == 200
    r = client.post("/logout")
    assert r.status_code == 303
    assert client.get("/dashboard").status_code == 302


def test_login_rate_limited_per_account(app, client, make_tenant):
    _t, user = make_tenant()
    _t2, other = make_tenant()
    for _ in range(5):  # tests configure 5 failures per hour per account
        assert login(client, user.email, "wrong password!!").status_code == 422
    r = login(client, user.email)  # even the right password waits now
    assert r.status_code == 429
    assert "Too many failed attempts" in r.text
    assert login(client, other.email).status_code == 303  # other accounts are not affected


def test_successful_logins_do_not_count_towards_the_limit(client, make_tenant):
    _t, user = make_tenant()
    for _ in range(8):
        assert login(client, user.email).status_code == 303
        client.post("/logout")


def test_session_rotates_at_login_and_dies_at_logout(app, make_tenant):
    _t, user = make_tenant()
    c1 = app.test_client()
    c1.get("/login")
    login(c1, user.email, remember=True)
    assert c1.get_cookie("remember_token") is not None
    session_cookie = c1.get_cookie("session").value
    remember_cookie = c1.get_cookie("remember_token").value
    # Another browser holding copies of both cookies is logged in ...
    thief = app.test_client()
    thief.set_cookie("session", session_cookie)
    thief.set_cookie("remember_token", remember_cookie)
    assert thief.get("/dashboard").status_code == 200
    # ... until the user logs out: both copied cookies stop working.
    c1.post("/logout")
    assert thief.get("/dashboard").status_code == 302
    thief2 = app.test_client()
    thief2.set_cookie("remember_token", remember_cookie)
    assert thief2.get("/dashboard").status_code == 302


def test_remember_me_survives_a_lost_session(app, make_tenant):
    _t, user = make_tenant()
    c = app.test_client()
    login(c, user.email, remember=True)
    remember_cookie = c.get_cookie("remember_token").value
    fresh = app.test_client()
    fresh.set_cookie("remember_token", remember_cookie)
    assert fresh.get("/dashboard").status_code == 200


def test_password_change_logs_out_other_devices(app, make_tenant):
    _t, user = make_tenant()
    phone, tablet = app.test_client(), app.test_client()
    login(phone, user.email)
    login(tablet, user.email)
    r = phone.post("/account", data={"current_password": "wrong", "new_password": "a new secret 123"})
    assert r.status_code == 422 and "This is not your current password." in r.text
    r = phone.post("/account", data={"current_password": PASSWORD, "new_password": "a new secret 123"})
    assert r.status_code == 303
    assert phone.get("/dashboard").status_code == 200      # this device stays in
    assert tablet.get("/dashboard").status_code == 302     # the other is out
    assert login(tablet, user.email, "a new secret 123").status_code == 303


def _link(app, pattern: str) -> str:
    body = app.extensions["outbox"][-1].get_content()
    m = re.search(pattern, body)
    assert m, body
    return m.group(0)


def test_password_reset_by_mail_is_one_time(app, client, make_tenant):
    _t, user = make_tenant()
    r = client.post("/forgot-password", data={"email": "nobody@example.com"})
    assert r.status_code == 303 and "outbox" not in app.extensions  # no mail, same answer
    r = client.post("/forgot-password", data={"email": user.email.upper()})
    assert r.status_code == 303
    link = _link(app, r"http://localhost/reset-password/\S+")
    path = link.replace("http://localhost", "")
    assert client.get(path).status_code == 200
    r = client.post(path, data={"password": "short"})
    assert r.status_code == 422 and "Use at least 10 characters." in r.text
    r = client.post(path, data={"password": "brand new secret 9"})
    assert r.status_code == 303
    assert login(client, user.email).status_code == 422
    assert login(client, user.email, "brand new secret 9").status_code == 303
    client.post("/logout")
    r = client.get(path)  # used once already
    assert r.status_code == 302 and "/forgot-password" in r.headers["Location"]
    assert client.get("/reset-password/forged-token").status_code == 302


def test_invitation_flow_and_deactivation(app, client, make_tenant, tenant_session):
    tenant, owner = make_tenant()
    login(client, owner.email)
    r = client.post("/settings/staff", data={"email": "Mei@Example.com", "role": "staff"})
    assert r.status_code == 200 and "One-time invitation link" in r.text
    link = _link(app, r"http://localhost/invite/\S+")
    path = link.replace("http://localhost", "")
    client.post("/logout")

    guest = app.test_client()
    assert guest.get(path).status_code == 200
    r = guest.post(path, data={"name": "", "password": PASSWORD})
    assert r.status_code == 422 and "This field is required." in r.text
    r = guest.post(path, data={"name": "Mei", "password": PASSWORD})
    assert r.status_code == 303
    page = guest.get("/dashboard")
    assert page.status_code == 200 and tenant.name in page.text
    assert guest.get("/settings/staff").status_code == 403  # staff is not owner
    guest.post("/logout")
    assert app.test_client().get(path).status_code == 404   # one-time

    s = tenant_session(tenant)
    mei = s.scalar(select(User).where(User.email == "mei@example.com"))
    membership = s.scalar(select(Membership).where(Membership.user_id == mei.id))
    assert membership.role == "staff"
    assert s.scalar(select(Invitation.accepted_at)) is not None

    staff_client = app.test_client()
    assert login(staff_client, "mei@example.com").status_code == 303
    login(client, owner.email)
    r = client.post(f"/settings/staff/{membership.id}/deactivate")
    assert r.status_code == 303
    assert staff_client.get("/dashboard").status_code == 302  # the open session ends
    assert login(staff_client, "mei@example.com").status_code == 422  # and cannot log in
    client.post(f"/settings/staff/{membership.id}/activate")
    assert login(staff_client, "mei@example.com").status_code == 303


def test_owner_cannot_deactivate_the_last_owner(client, make_tenant, tenant_session):
    tenant, owner = make_tenant()
    login(client, owner.email)
    m = tenant_session(tenant).scalar(select(Membership))
    r = client.post(f"/settings/staff/{m.id}/deactivate", follow_redirects=True)
    assert "You cannot deactivate yourself." in r.text


def test_invitation_revoked_or_bad_role(app, client, make_tenant, tenant_session):
    tenant, owner = make_tenant()
    login(client, owner.email)
    r = client.post("/settings/staff", data={"email": "x@example.com", "role": "emperor"})
    assert r.status_code == 422 and "Choose one of the listed values." in r.text
    client.post("/settings/staff", data={"email": "x@example.com", "role": "manager"})
    path = _link(app, r"http://localhost/invite/\S+").replace("http://localhost", "")
    inv_id = tenant_session(tenant).scalar(select(Invitation.id))
    assert client.post(f"/settings/invitations/{inv_id}/revoke").status_code == 303
    assert app.test_client().get(path).status_code == 404


def test_user_in_two_tenants_chooses_one(app, client, make_tenant, add_member):
    t1, owner = make_tenant(name="First Hotel")
    t2, _o2 = make_tenant(name="Second Bank", industry="bank")
    add_member(t2, "manager", email=owner.email)
    assert login(client, owner.email).status_code == 303
    r = client.get("/dashboard")
    assert r.status_code == 302 and "/choose-business" in r.headers["Location"]
    page = client.get("/choose-business")
    assert "First Hotel" in page.text and "Second Bank" in page.text
    r = client.post("/choose-business", data={"tenant": str(t2.id)})
    assert r.status_code == 303
    assert "Second Bank" in client.get("/dashboard").text
    assert client.get("/settings/staff").status_code == 403  # manager there
    t3, _o3 = make_tenant(name="Not Mine")
    assert client.post("/choose-business", data={"tenant": str(t3.id)}).status_code == 404


def test_language_is_per_user_and_defaults_to_tenant(app, client, make_tenant, add_member):
    tenant, owner = make_tenant(language="zh_CN")
    login(client, owner.email)
    assert 'lang="zh-CN"' in client.get("/dashboard").text
    client.post("/language", data={"lang": "en", "next": "/dashboard"})
    assert 'lang="en"' in client.get("/dashboard").text
    other = app.test_client()
    staff = add_member(tenant, "staff", language=None)
    login(other, staff.email)
    assert 'lang="zh-CN"' in other.get("/dashboard").text  # the tenant's language
    assert client.post("/language", data={"lang": "fr"}).status_code == 400


def test_a_new_member_is_welcomed_in_the_businesss_language(app, client, make_tenant):
    """The welcome after joining speaks the tenant's language, not the browser's: the
    locale is picked again once the new member is logged in."""
    _tenant, owner = make_tenant(name="海景酒店", language="zh_CN")
    login(client, owner.email)
    client.post("/settings/staff", data={"email": "new@example.com", "role": "staff"})
    path = _link(app, r"http://localhost/invite/\S+").replace("http://localhost", "")
    client.post("/logout")
    guest = app.test_client()  # its browser asks for English
    r = guest.post(path, data={"name": "Mei", "password": PASSWORD}, follow_redirects=True)
    assert r.status_code == 200
    assert "欢迎加入“海景酒店”。" in html.unescape(r.text)


def test_a_new_owner_is_welcomed_in_the_language_chosen_at_sign_up(client):
    """The sign-up page was rendered in the browser's English; the welcome after it speaks
    the Chinese the owner chose (the locale is picked again at login)."""
    r = client.post("/signup", data={**GOOD, "language": "zh_CN"}, follow_redirects=True)
    assert r.status_code == 200
    assert "欢迎！已按“酒店”行业模板为您的商户完成初始设置。" in html.unescape(r.text)

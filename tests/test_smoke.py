from tests.conftest import PASSWORD, login


def test_signup_lands_on_dashboard(client):
    r = client.post("/signup", data={
        "business_name": "Harbour Hotel", "industry": "hotel", "owner_name": "Li Wei",
        "email": "li@example.com", "password": PASSWORD, "language": "en",
        "timezone": "Asia/Shanghai", "currency": "CNY"}, follow_redirects=True)
    assert r.status_code == 200, r.text[:2000]
    assert "Harbour Hotel" in r.text


def test_login(client, make_tenant):
    tenant, user = make_tenant()
    r = login(client, user.email)
    assert r.status_code == 303
    r = client.get("/dashboard")
    assert r.status_code == 200
    assert tenant.name in r.text

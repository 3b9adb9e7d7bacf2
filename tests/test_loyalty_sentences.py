"""The tier progress sentences (saas/loyalty/sentences.py): one source for the guest card
and the API, counted with the right plural in English and said in Chinese."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from saas.formatting import date
from saas.loyalty.sentences import keep_tier_sentence, next_tier_sentence
from tests.test_loyalty_card import desk  # noqa: F401  (the fixture: a hotel desk with a guest)

BY = dt.date(2027, 3, 31)


@pytest.fixture
def en(app):
    with app.test_request_context("/api/v1/customers/x/loyalty", headers={"Accept-Language": "en"}):
        yield


@pytest.fixture
def zh(app):
    with app.test_request_context("/api/v1/customers/x/loyalty", headers={"Accept-Language": "zh-CN"}):
        yield


def test_next_tier_in_english_counts_points_and_visits(en):
    assert next_tier_sentence("points_earned", 1, "Gold") == "Needs 1 more point to reach Gold"
    assert next_tier_sentence("points_earned", 2, "Gold") == "Needs 2 more points to reach Gold"
    assert next_tier_sentence("points_earned", 1200, "Gold") == "Needs 1,200 more points to reach Gold"
    assert next_tier_sentence("visits", 1, "Gold") == "Needs 1 more visit to reach Gold"
    assert next_tier_sentence("visits", 3, "Gold") == "Needs 3 more visits to reach Gold"
    assert next_tier_sentence("spend", Decimal("749.5"), "Gold") == "Needs CN¥749.50 more spend to reach Gold"
    assert next_tier_sentence("points_earned", 0, "Gold") == (
        "Reached Gold: the upgrade comes with the next activity")


def test_keep_tier_in_english_as_the_issue_says_it(en):
    assert keep_tier_sentence("points_earned", 1200, "Gold", BY) == "Needs 1,200 more points by 2027-03-31 to keep Gold"
    assert keep_tier_sentence("points_earned", 1, "Gold", BY) == "Needs 1 more point by 2027-03-31 to keep Gold"
    assert keep_tier_sentence("visits", 1, "Gold", BY) == "Needs 1 more visit by 2027-03-31 to keep Gold"
    assert keep_tier_sentence("visits", 2, "Gold", BY) == "Needs 2 more visits by 2027-03-31 to keep Gold"
    assert keep_tier_sentence("spend", Decimal(1000), "Gold", BY) == (
        "Needs CN¥1,000.00 more spend by 2027-03-31 to keep Gold")
    # Kept: said with the review day, the day after the last day that counts.
    assert keep_tier_sentence("points_earned", 0, "Gold", BY) == "Enough to keep Gold at the review on 2027-04-01"


def test_keep_tier_with_the_cards_localized_date(en):
    assert keep_tier_sentence("points_earned", 300, "Silver", BY, date) == (
        "Needs 300 more points by Mar 31, 2027 to keep Silver")
    assert keep_tier_sentence("visits", 0, "Silver", BY, date) == "Enough to keep Silver at the review on Apr 1, 2027"


def test_sentences_in_chinese(zh):
    assert next_tier_sentence("points_earned", 1, "金卡") == "再获得 1 积分即可升至金卡"
    assert next_tier_sentence("points_earned", 1200, "金卡") == "再获得 1,200 积分即可升至金卡"
    assert next_tier_sentence("visits", 2, "金卡") == "再消费 2 次即可升至金卡"
    assert next_tier_sentence("spend", Decimal("749.5"), "金卡") == "再消费 ¥749.50 即可升至金卡"
    assert next_tier_sentence("visits", 0, "金卡") == "已达到金卡门槛：将在下一次积分变动时升级"
    assert keep_tier_sentence("points_earned", 1200, "金卡", BY) == "需在 2027-03-31 前再获得 1,200 积分，方可保级金卡"
    assert keep_tier_sentence("visits", 1, "金卡", BY) == "需在 2027-03-31 前再消费 1 次，方可保级金卡"
    assert keep_tier_sentence("spend", Decimal(80), "金卡", BY) == "需在 2027-03-31 前再消费 ¥80.00，方可保级金卡"
    assert keep_tier_sentence("points_earned", 0, "金卡", BY) == "已满足保级条件，2027-04-01 复核时可保级金卡"
    assert keep_tier_sentence("points_earned", 5, "金卡", BY, date) == "需在 2027年3月31日 前再获得 5 积分，方可保级金卡"


def test_the_api_says_one_more_point_in_english_and_chinese(app, client, make_tenant, write_session):
    from saas.settings import services as settings_services
    from tests.test_api_customers import auth, create
    from tests.test_api_loyalty import PROGRAMME, award, set_programme

    tenant, _owner = make_tenant("hotel")
    set_programme(app, tenant, PROGRAMME)
    s = write_session(tenant)
    _k, key = settings_services.create_api_key(s, "PMS", None)
    s.commit()
    create(client, key, ref="PMS-1")
    award(client, key, "9990")  # 999 points, Gold at 1,000
    body = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert body["next_tier"]["needed"] == 1
    assert body["next_tier"]["message"] == "Needs 1 more point to reach Gold"
    zh = client.get("/api/v1/customers/PMS-1/loyalty", headers={**auth(key), "Accept-Language": "zh-CN"})
    assert zh.get_json()["next_tier"]["message"] == "再获得 1 积分即可升至金卡"


def test_the_loyalty_page_says_the_tier_is_kept(client, desk, monkeypatch):  # noqa: F811
    """The card's loyalty page says the same sentence as the API when the retention
    threshold is met (with the card's localized date)."""
    from saas import clock
    from tests.conftest import login
    from tests.test_loyalty_card import DAY

    monkeypatch.setattr(clock, "today", lambda tz="UTC": DAY)
    desk.earn("6000", DAY - dt.timedelta(days=200))
    desk.earn("5000", DAY - dt.timedelta(days=100))  # Silver since then; 500 of the 800 that keep it
    login(client, desk.staff.email)
    assert "Needs 300 more points by" in client.get(desk.page).text
    desk.earn("3000")  # 800 in the window: kept
    since = DAY - dt.timedelta(days=100)
    review = dt.date(since.year + 1, since.month, since.day)
    page = client.get(desk.page).text
    assert f"Enough to keep Silver at the review on {review:%b} {review.day}, {review.year}" in page
    assert "more points by" not in page

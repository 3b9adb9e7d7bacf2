"""Every industry preset is valid and carries what each industry needs."""
from __future__ import annotations

import pytest

from saas.auth.models import INDUSTRIES
from saas.settings import presets

REQUIRED_DEPARTMENTS = {
    "hotel": {"front-office", "housekeeping", "food-beverage", "sales"},
    "dealership": {"sales", "after-sales", "customer-service"},
    "property": {"customer-service", "engineering", "security", "cleaning"},
    "bank": {"counter", "wealth", "credit"},
    "other": set(),
}


@pytest.mark.parametrize("industry", INDUSTRIES)
def test_preset_is_complete_and_valid(industry, app):
    preset = presets.load_preset(industry)
    departments = {d["code"] for d in preset["departments"]}
    assert REQUIRED_DEPARTMENTS[industry] <= departments
    assert preset["locations"], "a sample location"
    kinds = preset["transaction_kinds"]
    assert sum(1 for k in kinds if k.get("default")) == 1, "exactly one default transaction kind"
    for entries in (preset["departments"], preset["locations"], kinds):
        for e in entries:
            assert e["name_zh"] and e["name_en"]
    with app.test_request_context():
        for section in presets.PROGRAMME_SECTIONS:
            assert presets.validate_section(section, preset[section], departments,
                                            {k["code"] for k in kinds}) == [], section
    assert preset["rewards"], "a starting rewards catalogue"
    assert len({r["code"] for r in preset["rewards"]}) == len(preset["rewards"])
    for r in preset["rewards"]:
        assert r["name_zh"] and r["name_en"] and isinstance(r["points_cost"], int) and r["points_cost"] > 0

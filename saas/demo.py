"""Demo tenants for ``flask demo load``: one business per industry preset, with staff
logins, about sixty customers and twelve to eighteen months of transactions before
``as_of``, some of them customers who have stopped coming.

Everything is deterministic (a fixed seed per industry, dates counted back from
``as_of``) and idempotent: a demo tenant whose slug exists is left alone.
"""
from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saas.auth import services as auth_services
from saas.auth.models import Membership, Role, Tenant, User
from saas.customers import services as customer_services
from saas.customers.models import Customer, Transaction
from saas.db import Database, new_id
from saas.errors import ValidationFailed
from saas.settings import services as settings_services
from saas.settings.models import Department, Location, TransactionKind

DEMO_PASSWORD = "huitou-demo-2026"
SEED = 2026
CUSTOMERS_PER_TENANT = 60


# --- who the demo businesses are ---------------------------------------------------------

@dataclass(frozen=True)
class Person:
    name: str
    address_as: str
    email_name: str


@dataclass(frozen=True)
class DemoBusiness:
    industry: str
    slug: str
    name: str
    domain: str                      # demo logins are owner@<domain>, manager@<domain>, ...
    staff_names: tuple[str, str, str, str]   # owner, manager, staff 1, staff 2
    extra_location: dict             # a second location besides the preset's one
    history_days: int                # how far back the transactions go
    lost_days: tuple[int, int]       # lost customers' last business was this many days ago
    companies: tuple[tuple[str, str], ...]   # (name, form of address of the contact)
    notes: tuple[str, ...]
    card_prefix: str | None = None
    ref_format: str | None = None    # external references: ref_format.format(ref_base + 37 n)
    ref_base: int = 0
    generate: Callable = field(default=None, compare=False)


SURNAMES = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
    ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("高", "gao"),
    ("林", "lin"), ("罗", "luo"), ("郑", "zheng"), ("梁", "liang"), ("谢", "xie"), ("宋", "song"),
    ("唐", "tang"), ("许", "xu"), ("韩", "han"), ("冯", "feng"), ("邓", "deng"), ("曹", "cao"),
    ("彭", "peng"), ("曾", "zeng"), ("田", "tian"), ("董", "dong"), ("潘", "pan"), ("袁", "yuan"),
    ("蔡", "cai"), ("蒋", "jiang"), ("余", "yu"), ("杜", "du"), ("叶", "ye"), ("程", "cheng"),
    ("魏", "wei"), ("苏", "su"), ("吕", "lv"), ("丁", "ding"), ("沈", "shen"), ("范", "fan"),
)
GIVEN_MALE = ("伟", "强", "磊", "军", "洋", "勇", "杰", "涛", "明", "超", "建国", "志强", "俊杰",
              "浩然", "子轩", "宇航", "文博", "国栋", "家豪", "晨阳", "建华", "海峰", "立新", "鹏飞")
GIVEN_FEMALE = ("芳", "娜", "敏", "静", "丽", "艳", "秀英", "婷", "雪", "慧", "欣怡", "梓涵", "雨萱",
                "佳怡", "晓燕", "美玲", "思雨", "静怡", "海燕", "丹", "玉兰", "桂英", "晓红", "春梅")
ENGLISH = (
    ("David Miller", "Mr. Miller"), ("Sarah Johnson", "Ms. Johnson"), ("James Wilson", "Mr. Wilson"),
    ("Emma Thompson", "Ms. Thompson"), ("Michael Brown", "Mr. Brown"), ("Olivia Chen", "Ms. Chen"),
    ("Daniel Lee", "Mr. Lee"), ("Sophie Martin", "Ms. Martin"), ("Thomas Becker", "Mr. Becker"),
    ("Yuki Tanaka", "Ms. Tanaka"), ("Robert Garcia", "Mr. Garcia"), ("Anna Kowalski", "Ms. Kowalski"),
)
MOBILE_PREFIXES = ("135", "136", "137", "138", "139", "150", "151", "152", "158", "159", "186", "187",
                   "188", "189", "177", "199")


def _money(value: float, step: str = "1") -> Decimal:
    """A positive amount rounded to ``step`` yuan (e.g. "100", "1", "0.1")."""
    q = Decimal(step)
    return ((Decimal(str(value)) / q).quantize(Decimal("1")) * q).quantize(Decimal("0.01"))


def _between(rng: random.Random, low: float, high: float, mode: float | None = None) -> float:
    return rng.triangular(low, high, mode if mode is not None else (low + high) / 2)


def _visits(rng: random.Random, start: dt.date, end: dt.date, mean_gap: float) -> list[dt.date]:
    """Visit dates from ``start`` (always one) to ``end``, gaps drawn around ``mean_gap`` days."""
    days = [start]
    d = start
    while True:
        d = d + dt.timedelta(days=max(1, round(rng.expovariate(1 / mean_gap))))
        if d > end:
            return days
        days.append(d)


# A transaction before it is stored: (date, kind code, amount, quantity, department code, note).
Tx = tuple[dt.date, str, Decimal, int, str | None, str]


@dataclass
class Profile:
    """What the generator knows about one demo customer."""

    classification: str
    is_company: bool
    start: dt.date
    end: dt.date


def _gap(profile: Profile, important: float, general: float, potential: float) -> float:
    return {"important": important, "general": general, "potential": potential}[profile.classification]


def _hotel(rng: random.Random, p: Profile) -> list[Tx]:
    out: list[Tx] = []
    for d in _visits(rng, p.start, p.end, _gap(p, 28, 65, 120)):
        roll = rng.random()
        if p.is_company and roll < 0.12:
            guests = rng.choice((20, 30, 50, 80, 120))
            out.append((d, "banquet", _money(guests * _between(rng, 180, 420), "100"), 1, "sales",
                        rng.choice(("年会", "Product launch", "季度会议", "答谢晚宴"))))
            continue
        nights = rng.choice((1, 1, 1, 2, 2, 3))
        per_night = _between(rng, 500, 1000, 650)
        out.append((d, "stay", _money(min(3000, nights * per_night)), nights, "front-office",
                    rng.choice(("", "", "", "海景房", "Sea view", "行政楼层", "Late checkout", "连住"))))
        if rng.random() < 0.35:
            out.append((d, "food-beverage", _money(_between(rng, 80, 800, 260), "0.1"), 1, "food-beverage",
                        rng.choice(("", "中餐厅", "Lobby bar", "自助晚餐", "客房送餐"))))
    return out


def _dealership(rng: random.Random, p: Profile) -> list[Tx]:
    out: list[Tx] = []
    buys_car = p.is_company or rng.random() < 0.2
    first = True
    for d in _visits(rng, p.start, p.end, _gap(p, 75, 120, 200)):
        if first and buys_car:
            model = rng.choice((("大众帕萨特", 210_000), ("别克GL8", 280_000), ("丰田凯美瑞", 190_000),
                                ("奥迪A4L", 330_000), ("本田CR-V", 175_000), ("比亚迪汉", 230_000)))
            price = _money(min(400_000, max(150_000, model[1] * _between(rng, 0.85, 1.15))), "100")
            out.append((d, "vehicle-sale", price, 1, "sales", model[0]))
        else:
            job = rng.choice((("常规保养", 400, 1200), ("常规保养", 400, 1200), ("更换刹车片", 800, 2000),
                              ("钣金喷漆", 1500, 5000), ("轮胎更换", 1200, 3600), ("Air-con service", 300, 900)))
            out.append((d, "service-visit", _money(_between(rng, job[1], job[2]), "10"), 1, "after-sales", job[0]))
            if rng.random() < 0.2:
                out.append((d, "parts", _money(_between(rng, 100, 3000, 400), "10"), 1, "after-sales",
                            rng.choice(("脚垫", "行车记录仪", "Roof box", "雨刮片", "座椅套"))))
        first = False
    return out


def _property(rng: random.Random, p: Profile) -> list[Tx]:
    out: list[Tx] = []
    area = round(_between(rng, 40, 300) if p.is_company else _between(rng, 70, 180, 110))
    rate = Decimal("6.50") if p.is_company else Decimal("2.80")
    months = 3 if rng.random() < 0.3 else 1
    fee = (Decimal(area) * rate * months).quantize(Decimal("0.01"))
    note = f"{area}㎡ × {rate}/㎡" + (" × 3" if months == 3 else "")
    period = p.start.replace(day=1)
    while period <= p.end:
        paid = max(p.start, period + dt.timedelta(days=rng.randint(0, 12)))
        if paid <= p.end:
            out.append((paid, "management-fee", fee, 1, "customer-service", note))
        y, m = divmod(period.month - 1 + months, 12)
        period = period.replace(year=period.year + y, month=m + 1)
    for d in _visits(rng, p.start, p.end, _gap(p, 70, 110, 160))[1:]:
        if rng.random() < 0.65:
            out.append((d, "service-request", Decimal("0.00"), 1, "engineering",
                        rng.choice(("水管漏水", "门禁卡失灵", "Lift noise", "楼道灯不亮", "下水道堵塞", "噪音投诉"))))
        else:
            job = rng.choice((("家电清洗", "cleaning", 120, 380), ("开荒保洁", "cleaning", 300, 800),
                              ("更换水龙头", "engineering", 50, 200), ("Balcony repair", "engineering", 200, 600)))
            out.append((d, "paid-service", _money(_between(rng, job[2], job[3]), "10"), 1, job[1], job[0]))
    return out


def _bank(rng: random.Random, p: Profile) -> list[Tx]:
    out: list[Tx] = []
    loan_done = False
    for d in _visits(rng, p.start, p.end, _gap(p, 30, 55, 90)):
        roll = rng.random()
        if roll < 0.40:
            out.append((d, "counter-service", Decimal("0.00"), 1, "counter",
                        rng.choice(("转账汇款", "换卡", "Account update", "开立存款证明", "挂失补办"))))
        elif roll < 0.75:
            top = 2_000_000 if p.is_company else 300_000
            out.append((d, "deposit", _money(_between(rng, 5_000, top, 30_000), "1000"), 1, "counter",
                        rng.choice(("定期一年", "定期三年", "大额存单", "活期", "Time deposit"))))
        elif roll < 0.95 or loan_done:
            out.append((d, "wealth-product", _money(_between(rng, 50_000, 1_000_000, 150_000), "10000"), 1, "wealth",
                        rng.choice(("稳健理财90天", "结构性存款", "Balanced fund", "净值型理财", "保险理财"))))
        else:
            loan_done = True
            top = 3_000_000 if p.is_company else 1_200_000
            out.append((d, "loan", _money(_between(rng, 100_000, top, 400_000), "10000"), 1, "credit",
                        "经营贷" if p.is_company else rng.choice(("住房贷款", "消费贷", "Car loan"))))
    return out


BUSINESSES = (
    DemoBusiness(
        industry="hotel", slug="demo-hotel", name="海景酒店 Harbour View Hotel", domain="hotel.demo",
        staff_names=("林海", "周晓梅", "陈思远", "Grace Wu"),
        extra_location={"code": "resort", "name_zh": "海景度假村", "name_en": "Harbour View Resort"},
        history_days=540, lost_days=(125, 400), card_prefix="HV",
        companies=(("宏达国际贸易有限公司", "刘经理"), ("华盛会展服务有限公司", "赵总"),
                   ("远航商务旅行社", "孙经理"), ("Pacific Rim Consulting Ltd.", "Mr. Evans"),
                   ("金桥建设集团", "钱总"), ("博雅教育咨询有限公司", "吴老师")),
        notes=("喜欢高楼层安静房间", "对花生过敏", "Prefers a late checkout", "需要无烟房",
               "常住行政楼层", "生日在五月", "Needs an invoice for every stay"),
        generate=_hotel),
    DemoBusiness(
        industry="dealership", slug="demo-dealership", name="华通汽车4S店 Huatong Motors", domain="dealership.demo",
        staff_names=("郑国强", "马丽", "许文杰", "Kevin Zhang"),
        extra_location={"code": "north-service", "name_zh": "城北售后服务中心", "name_en": "North service centre"},
        history_days=510, lost_days=(240, 480), ref_format="DMS-{:06d}", ref_base=208_000,
        companies=(("顺达出租汽车有限公司", "王经理"), ("恒通物流有限公司", "冯总"),
                   ("瑞丰租赁有限公司", "蒋经理"), ("Metro Fleet Services", "Ms. Carter"),
                   ("鑫源科技有限公司", "何总"), ("安达保安服务公司", "曾经理")),
        notes=("车型：大众帕萨特 2021款", "希望保养时提供代步车", "Prefers Saturday appointments",
               "车牌 沪A·5K2XX", "对价格敏感，注意优惠", "延保客户"),
        generate=_dealership),
    DemoBusiness(
        industry="property", slug="demo-property", name="翠湖物业 Jade Lake Property Services", domain="property.demo",
        staff_names=("黄建华", "杨雪", "刘洋", "Lily Sun"),
        extra_location={"code": "estate-2", "name_zh": "二期小区", "name_en": "Estate phase 2"},
        history_days=450, lost_days=(190, 400),
        companies=(("家乐便利店", "谢老板"), ("晨光咖啡馆", "Ms. Park"), ("康华大药房", "唐店长"),
                   ("童心幼儿园", "袁园长"), ("美佳干洗店", "潘老板"), ("优品生鲜超市", "邓经理")),
        notes=("家中有老人，报修请提前电话", "养狗，注意", "Works nights, call after 2 pm",
               "车位 B2-118", "已办理门禁卡 3 张", "业委会成员"),
        generate=_property),
    DemoBusiness(
        industry="bank", slug="demo-bank", name="东湖银行城南支行 East Lake Bank, Chengnan Branch", domain="bank.demo",
        staff_names=("沈立新", "韩静", "丁鹏飞", "Amy Xu"),
        extra_location={"code": "east-office", "name_zh": "城东分理处", "name_en": "East sub-branch"},
        history_days=400, lost_days=(125, 370), ref_format="CIF{:010d}", ref_base=6_203_150_000,
        companies=(("恒信建材有限公司", "程总"), ("鑫源科技有限公司", "何总"), ("瑞丰物流有限公司", "范经理"),
                   ("Lakeside Trading Ltd.", "Mr. Novak"), ("百味餐饮管理有限公司", "宋总"), ("新华印务有限公司", "苏经理")),
        notes=("风险评估：稳健型", "偏好线下办理业务", "Speaks English only", "代发工资客户",
               "理财到期提醒", "VIP 客户经理：韩静"),
        generate=_bank),
)


# --- building one tenant -------------------------------------------------------------------

def _people(rng: random.Random, business: DemoBusiness) -> list[tuple[Person, bool]]:
    """About sixty (person, is_company) pairs: companies, English names and Chinese names."""
    people: list[tuple[Person, bool]] = []
    for name, address_as in business.companies:
        people.append((Person(name, address_as, ""), True))
    for name, address_as in rng.sample(ENGLISH, 6):
        people.append((Person(name, address_as, name.lower().replace(" ", ".")), False))
    taken = {p.name for p, _c in people}
    while len(people) < CUSTOMERS_PER_TENANT:
        (surname, pinyin), female = rng.choice(SURNAMES), rng.random() < 0.5
        name = surname + rng.choice(GIVEN_FEMALE if female else GIVEN_MALE)
        if name in taken:
            continue
        taken.add(name)
        people.append((Person(name, surname + ("女士" if female else "先生"), f"{pinyin}{rng.randint(10, 9999)}"), False))
    rng.shuffle(people)
    return people


def _phone(rng: random.Random, taken: set[str], company: bool) -> str:
    """A unique, valid Chinese number in E.164, as the archive stores phones."""
    while True:
        if company:
            typed = rng.choice(("021", "0755", "020", "0571")) + f"{rng.randint(0, 99_999_999):08d}"
        else:
            typed = rng.choice(MOBILE_PREFIXES) + f"{rng.randint(0, 99_999_999):08d}"
        try:
            phone = customer_services.parse_phone(typed, "CN")
        except ValueError:
            continue
        if phone not in taken:
            taken.add(phone)
            return phone


def _profile(rng: random.Random, business: DemoBusiness, first_day: dt.date, as_of: dt.date,
             company: bool) -> Profile:
    """Who the customer is to the business: loyal, occasional, new, or lost (no business
    for ``business.lost_days`` days, always more than four months)."""
    classification = "important" if company else rng.choices(("important", "general", "potential"), (15, 60, 25))[0]
    roll = rng.random()
    span = (as_of - first_day).days
    if roll < 0.22:
        low, high = business.lost_days
        end = as_of - dt.timedelta(days=rng.randint(low, min(high, span - 30)))
        start = first_day + dt.timedelta(days=rng.randint(0, max(0, (end - first_day).days - 60)))
    elif roll < 0.35:  # new in the last four months
        start = as_of - dt.timedelta(days=rng.randint(10, 120))
        end = as_of
    else:
        start = first_day + dt.timedelta(days=rng.randint(0, span // 2))
        end = as_of
    return Profile(classification=classification, is_company=company, start=start, end=end)


def _create(s: Session, business: DemoBusiness, as_of: dt.date) -> tuple[int, int]:
    """Create the demo tenant in ``s`` (bound to it afterwards); returns (customers, transactions)."""
    rng = random.Random(f"{SEED}-{business.industry}")
    owner_name, manager_name, staff1_name, staff2_name = business.staff_names
    tenant, owner = auth_services.create_tenant(
        s, name=business.name, industry=business.industry, owner_name=owner_name,
        owner_email=f"owner@{business.domain}", password=DEMO_PASSWORD)
    tenant.slug = business.slug
    # The members share the owner's password, so they share its hash (hashing is slow on
    # purpose, and the demo should load in seconds).
    members = {}
    for login, name, role in (("manager", manager_name, Role.manager), ("staff1", staff1_name, Role.staff),
                              ("staff2", staff2_name, Role.staff)):
        email = f"{login}@{business.domain}"
        user = auth_services.find_user(s, email)
        if user is None:
            user = User(email=email, name=name, password_hash=owner.password_hash,
                        session_token=auth_services.new_session_token())
            s.add(user)
            s.flush()
        s.add(Membership(user_id=user.id, role=role.value))
        members[login] = user
    settings_services.save_entry(s, "locations", {**business.extra_location, "active": True})
    s.flush()

    kinds = {k.code: k.id for k in s.scalars(select(TransactionKind))}
    departments = {d.code: d.id for d in s.scalars(select(Department))}
    locations = [x.id for x in s.scalars(select(Location).order_by(Location.position))]
    servers = [members["staff1"].id, members["staff2"].id, members["manager"].id]
    tz = ZoneInfo(tenant.timezone)
    first_day = as_of - dt.timedelta(days=business.history_days)

    customers: list[Customer] = []
    transactions: list[Transaction] = []
    phones: set[str] = set()
    for n, (person, company) in enumerate(_people(rng, business), 1):
        profile = _profile(rng, business, first_day, as_of, company)
        home = locations[0] if rng.random() < 0.7 else rng.choice(locations)
        ref = None
        if business.industry == "property":  # the unit: building-entrance-floor/flat
            ref = f"{rng.randint(1, 18)}-{rng.randint(1, 3)}-{rng.randint(2, 32):02d}{rng.randint(1, 4):02d}"
            if ref in {c.external_ref for c in customers}:
                ref = f"{ref}-{n}"
        elif business.ref_format and rng.random() < 0.8:
            ref = business.ref_format.format(business.ref_base + n * 37)
        card = f"{business.card_prefix}{100000 + n * 7:06d}" if business.card_prefix and rng.random() < 0.55 else None
        email = ""
        if person.email_name and rng.random() < 0.45:
            email = f"{person.email_name}@example.com"
        customer = Customer(
            id=new_id(), name=person.name, address_as=person.address_as, phone=_phone(rng, phones, company),
            email=email, external_ref=ref, card_number=card, classification=profile.classification,
            notes=rng.choice(business.notes) if rng.random() < 0.3 else "", location_id=home,
            created_at=dt.datetime.combine(profile.start, dt.time(10, 0), tz).astimezone(dt.timezone.utc))
        customers.append(customer)
        for day, kind, amount, quantity, dept, note in business.generate(rng, profile):
            if day > as_of:
                continue
            transactions.append(Transaction(
                id=new_id(), customer_id=customer.id, kind_id=kinds[kind], occurred_on=day, amount=amount,
                quantity=quantity, location_id=home if rng.random() < 0.85 else rng.choice(locations),
                department_id=departments.get(dept) if dept else None,
                staff_user_id=rng.choice(servers), note=note))
    s.add_all(customers)
    s.flush()
    s.add_all(transactions)
    s.flush()
    _loyalty(s, customers, transactions, servers, as_of)
    return len(customers), len(transactions)


def _loyalty(s: Session, customers: list[Customer], transactions: list[Transaction], servers: list,
             as_of: dt.date) -> None:
    """Replay the history through the loyalty programme: every transaction earns on its
    day, a few customers redeemed rewards, the expiry and tier reviews run as of ``as_of``."""
    from saas.loyalty import ledger, services as loyalty

    programme = loyalty.programme_of(s)
    by_id = {c.id: c for c in customers}
    rewards = loyalty.list_rewards(s)
    rng = random.Random(7)
    for tx in sorted(transactions, key=lambda t: (t.occurred_on, t.id)):
        customer = by_id[tx.customer_id]
        # As recording it does: the kind, location and department codes count (category multipliers).
        loyalty.award(s, tx, customer, tx.staff_user_id, tx.occurred_on, programme)
        if rewards and rng.random() < 0.08:
            reward = rng.choice(rewards)
            try:
                ledger.redeem(s, programme, customer, tx.occurred_on, reward=reward, staff_user_id=tx.staff_user_id,
                              idempotency_key=f"demo:redeem:{tx.id}")
            except ValidationFailed:
                pass  # not enough points yet
    ledger.expire_due(s, as_of)
    ledger.review_tiers(s, programme, as_of)


def load_all(database: Database, as_of: dt.date) -> Iterator[str]:
    """Create the demo tenant of every industry preset that does not exist yet, each in
    its own transaction, and say what happened in one line per tenant."""
    for business in BUSINESSES:
        s = database.new_session()
        try:
            if s.scalar(select(Tenant.id).where(Tenant.slug == business.slug)) is not None:
                yield f"exists {business.slug}"
                continue
            customers, transactions = _create(s, business, as_of)
            s.commit()
        except IntegrityError:
            # Another loader created it at the same moment.
            s.rollback()
            yield f"exists {business.slug}"
            continue
        except ValidationFailed as exc:
            # e.g. owner@<domain> exists with another password: leave that account alone.
            s.rollback()
            yield f"skipped {business.slug}: " + "; ".join(str(m) for v in exc.errors.values() for m in v)
            continue
        finally:
            s.close()
        yield (f"created {business.slug} ({business.industry}): owner@{business.domain} / {DEMO_PASSWORD}"
               f" — also manager@, staff1@, staff2@{business.domain}; {customers} customers,"
               f" {transactions} transactions up to {as_of.isoformat()}")

"""Deterministic data generator for the benchmarks (issue 3, "Performance").

Creates N tenants through the app's own sign-up service (so each has its industry preset:
locations, departments, transaction kinds), then bulk-loads customers and transactions
with the SQL of the SQLAlchemy Core insert run as ``executemany`` on large batches.

Everything comes from ``random.Random(seed)`` and a fixed ``--end`` date: the same
arguments give the same database (ids included: they are UUIDv7-shaped, made from a
counter and the seeded generator rather than the wall clock).

    .venv/bin/python -m bench.generate --size small --db instance/bench-small.db
    .venv/bin/python -m bench.generate --size full --big-tenant 100000 --db instance/bench-full.db
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import itertools
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

SIZES = {
    #          tenants, customers, transactions, default customers of tenant #1
    "small": (3, 10_000, 100_000, 5_000),
    "medium": (20, 200_000, 2_000_000, 50_000),
    "full": (100, 1_000_000, 10_000_000, 100_000),
}
DEFAULT_END = dt.date(2025, 12, 31)
HISTORY_YEARS = 5
BATCH = 50_000
OWNER_PASSWORD = "bench-password-2026"
# Tenant #1 is a dealership (it has plate numbers to search); the rest cycle through these.
INDUSTRY_CYCLE = ("dealership", "hotel", "hotel", "property", "bank", "dealership", "other", "hotel")

# --- names ---------------------------------------------------------------------------------

# The most common surnames, weighted roughly by frequency (王李张刘陈 are ~30% of China).
SURNAMES = [
    ("王", "wang", 7.1), ("李", "li", 7.0), ("张", "zhang", 6.7), ("刘", "liu", 5.4), ("陈", "chen", 4.5),
    ("杨", "yang", 3.1), ("黄", "huang", 2.2), ("赵", "zhao", 2.0), ("吴", "wu", 2.0), ("周", "zhou", 1.9),
    ("徐", "xu", 1.5), ("孙", "sun", 1.5), ("马", "ma", 1.3), ("朱", "zhu", 1.3), ("胡", "hu", 1.2),
    ("郭", "guo", 1.2), ("何", "he", 1.0), ("高", "gao", 1.0), ("林", "lin", 1.0), ("罗", "luo", 0.9),
    ("郑", "zheng", 0.9), ("梁", "liang", 0.9), ("谢", "xie", 0.7), ("宋", "song", 0.7), ("唐", "tang", 0.7),
    ("许", "xu", 0.6), ("韩", "han", 0.6), ("冯", "feng", 0.6), ("邓", "deng", 0.6), ("曹", "cao", 0.6),
    ("彭", "peng", 0.5), ("曾", "zeng", 0.5), ("肖", "xiao", 0.5), ("田", "tian", 0.5), ("董", "dong", 0.5),
    ("袁", "yuan", 0.4), ("潘", "pan", 0.4), ("于", "yu", 0.4), ("蒋", "jiang", 0.4), ("蔡", "cai", 0.4),
    ("余", "yu", 0.4), ("杜", "du", 0.4), ("叶", "ye", 0.4), ("程", "cheng", 0.4), ("苏", "su", 0.3),
    ("魏", "wei", 0.3), ("吕", "lv", 0.3), ("丁", "ding", 0.3), ("任", "ren", 0.3), ("沈", "shen", 0.3),
    ("姚", "yao", 0.3), ("卢", "lu", 0.3), ("姜", "jiang", 0.3), ("崔", "cui", 0.3), ("钟", "zhong", 0.3),
    ("谭", "tan", 0.3), ("陆", "lu", 0.2), ("汪", "wang", 0.2), ("范", "fan", 0.2), ("金", "jin", 0.2),
    ("石", "shi", 0.2), ("廖", "liao", 0.2), ("贾", "jia", 0.2), ("夏", "xia", 0.2), ("韦", "wei", 0.2),
    ("欧阳", "ouyang", 0.05), ("司马", "sima", 0.01), ("上官", "shangguan", 0.01),
]
GIVEN_MALE = list("伟强磊军洋勇杰涛明超斌鹏辉刚平波峰建华亮飞俊浩宇轩博文晨阳龙凯") + [
    "建国", "志强", "俊杰", "浩然", "子轩", "宇航", "文博", "国栋", "家豪", "晨阳", "建华", "海峰",
    "立新", "鹏飞", "志明", "永强", "晓东", "国强", "德华", "振宇", "天佑", "一鸣", "宏伟", "思远"]
GIVEN_FEMALE = list("芳娜敏静丽艳婷雪慧娟霞玲琳颖洁佳瑶萍红燕梅") + [
    "秀英", "欣怡", "梓涵", "雨萱", "佳怡", "晓燕", "美玲", "思雨", "静怡", "海燕", "玉兰", "桂英",
    "晓红", "春梅", "诗涵", "可馨", "雅婷", "梦瑶", "丽娟", "淑芬", "婉清", "紫萱", "欣妍", "若曦"]
ENGLISH_FIRST_M = ["David", "James", "Michael", "Robert", "John", "William", "Thomas", "Daniel",
                   "Peter", "Mark", "Paul", "Andrew", "Kevin", "Jason", "Eric", "Henry"]
ENGLISH_FIRST_F = ["Sarah", "Emma", "Olivia", "Sophie", "Anna", "Emily", "Grace", "Laura",
                   "Lucy", "Kate", "Helen", "Alice", "Claire", "Julia", "Amy", "Rachel"]
ENGLISH_LAST = ["Smith", "Johnson", "Miller", "Brown", "Wilson", "Taylor", "Thompson", "Martin",
                "Becker", "Garcia", "Lee", "Chen", "Wong", "Clark", "Walker", "Young", "King",
                "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Müller", "Tanaka"]
MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151",
                   "152", "155", "156", "157", "158", "159", "166", "173", "177", "180", "181",
                   "182", "183", "185", "186", "187", "188", "189", "191", "198", "199"]
MAIL_DOMAINS = ["qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "gmail.com", "outlook.com"]
PROVINCES = "京沪粤苏浙鲁川鄂湘豫闽皖津渝冀辽陕"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O on Chinese plates
PLATE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
COMPANIES = ["华信科技有限公司", "远航物流有限公司", "恒通贸易有限公司", "东方建设集团", "锦程旅游有限公司",
             "新世纪医药有限公司", "博远咨询有限公司", "天成地产有限公司", "Acme Trading Ltd.",
             "Pacific Consulting Co."]
JOB_TITLES = ["总经理", "采购经理", "行政主管", "财务总监", "销售总监", "Director", "Manager"]

# Chinese New Year (春节) of each year: the peak of travel and spending.
CNY = {2019: (2, 5), 2020: (1, 25), 2021: (2, 12), 2022: (2, 1), 2023: (1, 22), 2024: (2, 10),
       2025: (1, 29), 2026: (2, 17), 2027: (2, 6), 2028: (1, 26), 2029: (2, 13), 2030: (2, 3)}

# --- industries ----------------------------------------------------------------------------

# kind code -> (weight, amount range in yuan (low, high), quantity range, department code)
KINDS = {
    "hotel": {"stay": (60, (280, 1800), (1, 5), "front-office"),
              "food-beverage": (32, (60, 900), (1, 1), "food-beverage"),
              "banquet": (8, (3000, 60000), (1, 1), "sales")},
    "dealership": {"service-visit": (70, (280, 4500), (1, 1), "after-sales"),
                   "parts": (22, (80, 6000), (1, 4), "after-sales"),
                   "vehicle-sale": (8, (79800, 459800), (1, 1), "sales")},
    "bank": {"deposit": (55, (1000, 500000), (1, 1), "counter"),
             "loan": (10, (50000, 2000000), (1, 1), "credit"),
             "wealth-product": (35, (10000, 1000000), (1, 1), "wealth")},
    "property": {"management-fee": (60, (600, 4800), (1, 1), "customer-service"),
                 "service-request": (25, (0, 300), (1, 1), "engineering"),
                 "paid-service": (15, (80, 1500), (1, 2), "cleaning")},
    "other": {"purchase": (75, (20, 2000), (1, 6), "sales"),
              "service": (25, (50, 800), (1, 1), "customer-service")},
}
CARD_FORMAT = {"hotel": ("HT", 9), "dealership": ("VIP", 8), "bank": ("622848", 13),
               "property": ("WY", 8), "other": ("M", 9)}
REF_FORMAT = {"hotel": "PMS{:07d}", "dealership": "DMS-{:06d}", "bank": "CIF{:010d}",
              "property": "RM{:06d}", "other": "C{:06d}"}
CARD_SHARE = {"hotel": 0.55, "dealership": 0.7, "bank": 1.0, "property": 0.3, "other": 0.4}


def day_weight(industry: str, day: dt.date, start_year: int) -> float:
    """How busy ``day`` is for the industry: month seasons, Chinese New Year, the National
    Day Golden Week, the week, and ~8% growth a year."""
    m, wd = day.month, day.weekday()
    cny = dt.date(day.year, *CNY.get(day.year, (2, 1)))
    to_cny = (day - cny).days
    next_cny = (dt.date(day.year + 1, *CNY.get(day.year + 1, (2, 1))) - day).days
    golden_week = m == 10 and day.day <= 7
    w = 1.0
    if industry == "hotel":
        w = [1.0, 1.1, 0.8, 0.9, 1.1, 1.0, 1.5, 1.6, 1.0, 1.2, 0.8, 0.9][m - 1]
        w *= 1.35 if wd >= 4 else 1.0
        if -3 <= to_cny <= 10:
            w *= 2.2
        if golden_week:
            w *= 2.0
        if m == 5 and day.day <= 5:
            w *= 1.6
    elif industry == "dealership":
        w = [1.1, 0.8, 1.0, 1.0, 1.0, 0.9, 0.8, 0.9, 1.3, 1.3, 1.0, 1.4][m - 1]  # 金九银十, year end
        w *= 1.25 if wd >= 5 else 1.0
        if 0 <= next_cny <= 30 or -30 <= to_cny < 0:
            w *= 1.5  # servicing and buying before the holiday
        if 0 <= to_cny <= 6:
            w *= 0.2  # closed over the holiday
        if golden_week:
            w *= 1.4
    elif industry == "bank":
        w = 1.3 if m in (3, 6, 9, 12) else 1.0
        w *= 0.35 if wd >= 5 else 1.0
        if -25 <= to_cny < 0 or 0 <= next_cny <= 25:
            w *= 1.6  # year-end bonuses deposited
        if 0 <= to_cny <= 6 or golden_week:
            w *= 0.1
    elif industry == "property":
        w = 1.6 if day.day <= 10 else 0.8  # fees paid early in the month
        w *= 1.3 if m in (1, 12) else 1.0
        if 0 <= to_cny <= 6:
            w *= 0.3
    else:
        w = [1.2, 1.0, 0.9, 0.9, 1.0, 1.1, 0.9, 0.9, 1.0, 1.1, 1.6, 1.4][m - 1]  # 双十一
        w *= 1.3 if wd >= 5 else 1.0
        if m == 11 and 10 <= day.day <= 12:
            w *= 2.5
    return w * (1.08 ** (day.year - start_year))


@dataclass
class Calendar:
    days: list[str]             # ISO dates
    created: list[str]          # created_at strings as SQLAlchemy stores them on SQLite
    cum: dict[str, list[float]] = field(default_factory=dict)  # industry -> cumulative weights

    def pick(self, rng: random.Random, industry: str, lo: int, hi: int) -> int:
        """A day index in [lo, hi] drawn by the industry's seasonal weights."""
        cw = self.cum[industry]
        a = cw[lo - 1] if lo else 0.0
        return min(bisect.bisect_left(cw, a + rng.random() * (cw[hi] - a)), hi)


def make_calendar(end: dt.date, years: int) -> Calendar:
    start = dt.date(end.year - years + 1, 1, 1)
    days = [start + dt.timedelta(n) for n in range((end - start).days + 1)]
    cal = Calendar([d.isoformat() for d in days], [f"{d.isoformat()} 02:30:00.000000" for d in days])
    for industry in KINDS:
        cal.cum[industry] = list(itertools.accumulate(day_weight(industry, d, start.year) for d in days))
    return cal


# --- ids -------------------------------------------------------------------------------------

class IdMaker:
    """UUIDv7-shaped ids from a counter and a seeded generator: valid version-7 / RFC 4122
    variant UUIDs, increasing in the order they are made (append-only B-tree inserts like
    the app's ``new_id()``), and reproducible. Returned as the 32 hex digits SQLAlchemy's
    ``Uuid`` type stores on SQLite."""

    def __init__(self, rng: random.Random, start_ms: int):
        self.rng = rng
        self.seq = start_ms << 12

    def __call__(self) -> str:
        self.seq += 1
        s = self.seq
        # 48-bit ms timestamp | version 7 | 12-bit sub-ms counter | variant 10 | 62 random bits
        return "%032x" % (((s >> 12) << 80) | (0x7 << 76) | ((s & 0xFFF) << 64) | (0b10 << 62)
                          | self.rng.getrandbits(62))


def as_db_uuid(u) -> str:
    return u.hex


# --- the generator -------------------------------------------------------------------------

@dataclass
class TenantInfo:
    id: str
    slug: str
    industry: str
    owner_id: str
    owner_email: str
    location_id: str
    kinds: list             # [(kind_id, weight, (lo, hi), (qlo, qhi), department_id)]
    customers: int = 0
    transactions: int = 0


def split(total: int, parts: int, first: int | None) -> list[int]:
    """``total`` split into ``parts`` shares; the first gets ``first`` when given."""
    if parts == 1:
        return [total]
    if first is None:
        first = total // parts
    first = min(first, total - (parts - 1))
    rest = total - first
    shares = [rest // (parts - 1)] * (parts - 1)
    for i in range(rest - sum(shares)):
        shares[i] += 1
    return [first] + shares


def create_tenants(engine, n: int, rng: random.Random) -> list[TenantInfo]:
    from saas.auth import services as auth_services
    from saas.settings.models import Department, Location, TransactionKind

    auth_services.HASH_METHOD = "pbkdf2:sha256:1000"  # cheap: the generator makes 100 owners
    tenants = []
    for i in range(n):
        industry = INDUSTRY_CYCLE[i % len(INDUSTRY_CYCLE)]
        surname = SURNAMES[i % len(SURNAMES)][0]
        name = f"Bench {i + 1:03d} {surname}氏{ {'hotel': '酒店', 'dealership': '汽车4S店', 'bank': '银行支行', 'property': '物业', 'other': '商行'}[industry]}"
        email = f"owner{i + 1:03d}@bench.example.com"
        with Session(engine) as s:
            tenant, owner = auth_services.create_tenant(
                s, name=name, industry=industry, owner_name=f"{surname}总", owner_email=email,
                password=OWNER_PASSWORD)
            locations = list(s.scalars(select(Location).order_by(Location.position)))
            departments = {d.code: d.id for d in s.scalars(select(Department))}
            kinds = {k.code: k.id for k in s.scalars(select(TransactionKind))}
            spec = []
            for code, (weight, amount, qty, dept) in KINDS[industry].items():
                if code in kinds:
                    dep = departments.get(dept)
                    spec.append((as_db_uuid(kinds[code]), weight, amount, qty, as_db_uuid(dep) if dep else None))
            if not spec:  # a preset without the expected kinds: use what it has
                spec = [(as_db_uuid(k), 1, (50, 2000), (1, 1), None) for k in kinds.values()]
            info = TenantInfo(id=as_db_uuid(tenant.id), slug=tenant.slug, industry=industry,
                              owner_id=as_db_uuid(owner.id), owner_email=email,
                              location_id=as_db_uuid(locations[0].id), kinds=spec)
            s.commit()
        tenants.append(info)
    return tenants


# In the order of the Core insert's positional parameters (checked by insert_sql).
CUSTOMER_COLUMNS = ("tenant_id", "id", "name", "address_as", "phone", "email", "external_ref", "card_number",
                    "phone_alt", "plate_number", "classification", "notes", "location_id", "owner_user_id",
                    "birthday", "gender", "company", "job_title", "company_industry", "company_size",
                    "consent_phone", "consent_sms", "consent_email", "tags", "merged_into_id", "erased_at",
                    "created_at")
TRANSACTION_COLUMNS = ("tenant_id", "id", "customer_id", "kind_id", "location_id", "department_id",
                       "staff_user_id", "occurred_on", "amount", "quantity", "external_id", "note", "created_at")


def insert_sql(engine, table, columns) -> str:
    """The SQL of the Core insert for ``columns`` (positional parameters on SQLite); the
    rows the generator yields must follow the compiled parameter order."""
    compiled = table.insert().compile(dialect=engine.dialect, column_keys=list(columns))
    order = tuple(compiled.positiontup) if compiled.positional else None
    if order is not None and order != tuple(columns):
        raise RuntimeError(f"{table.name}: the insert binds {order}, the generator yields {columns}")
    if order is None:  # a dialect with named parameters (PostgreSQL): bind by name
        return compiled.string, list(columns)
    return compiled.string, None


class Generator:
    def __init__(self, rng: random.Random, cal: Calendar, ids: IdMaker):
        self.rng = rng
        self.cal = cal
        self.ids = ids
        self.surnames = [s for s, _, _ in SURNAMES]
        self.surname_pinyin = {s: p for s, p, _ in SURNAMES}
        self.surname_cum = list(itertools.accumulate(w for _, _, w in SURNAMES))
        self.tag_choices = ['[]'] * 12 + ['["VIP"]', '["商务"]', '["常客"]', '["VIP", "商务"]']

    def person(self):
        """(name, address_as, gender, email local part)"""
        rng = self.rng
        male = rng.random() < 0.55
        if rng.random() < 0.07:
            first = rng.choice(ENGLISH_FIRST_M if male else ENGLISH_FIRST_F)
            last = rng.choice(ENGLISH_LAST)
            return (f"{first} {last}", f"{'Mr.' if male else 'Ms.'} {last}", "male" if male else "female",
                    f"{first}.{last}".lower())
        surname = self.surnames[bisect.bisect_left(self.surname_cum, rng.random() * self.surname_cum[-1])]
        given = rng.choice(GIVEN_MALE if male else GIVEN_FEMALE)
        return (surname + given, surname + ("先生" if male else "女士"), "male" if male else "female",
                self.surname_pinyin[surname])

    def customers(self, t: TenantInfo, n: int, n_transactions: int, last_day: int):
        """Yield customer rows; record (id, sorted transaction days) of each in self.made.
        Transaction days follow the industry's seasons over the whole history; a customer
        is created on the day of their first transaction."""
        rng, cal, ids = self.rng, self.cal, self.ids
        cum = cal.cum[industry := t.industry]
        top = cum[last_day]
        rnd, bis = rng.random, bisect.bisect_left
        counts = self.transaction_counts(n, n_transactions)
        card_prefix, card_digits = CARD_FORMAT[industry]
        card_share = CARD_SHARE[industry]
        ref_format = REF_FORMAT[industry]
        card_space = 10 ** card_digits
        # distinct card numbers: a stride through the number space that is coprime with it
        card_stride = 55_433  # odd and not a multiple of 5
        card_start = rng.randrange(card_space)
        phones = set()
        plates = set()
        self.made = made = []
        is_dealer = industry == "dealership"
        is_bank = industry == "bank"
        for i in range(n):
            name, address_as, gender, local = self.person()
            while True:
                phone = "+86" + MOBILE_PREFIXES[rng.randrange(len(MOBILE_PREFIXES))] + "%08d" % rng.randrange(100_000_000)
                if phone not in phones:
                    phones.add(phone)
                    break
            r = rng.random()
            email = ""
            if r < 0.35:
                email = (f"{rng.randrange(10_000_000, 3_000_000_000)}@qq.com" if r < 0.15
                         else f"{local}{rng.randrange(1, 10_000)}@{MAIL_DOMAINS[rng.randrange(len(MAIL_DOMAINS))]}")
            card = None
            if rng.random() < card_share:
                card = card_prefix + "%0*d" % (card_digits, (card_start + i * card_stride) % card_space)
            plate = ""
            if is_dealer and rng.random() < 0.9:
                while True:
                    new_energy = rng.random() < 0.25
                    body = "".join(rng.choice(PLATE_CHARS) for _ in range(5))
                    plate = PROVINCES[rng.randrange(len(PROVINCES))] + rng.choice(PLATE_LETTERS) + \
                        (rng.choice("DF") if new_energy else "") + body
                    if plate not in plates:
                        plates.add(plate)
                        break
            tx_days = sorted(min(bis(cum, rnd() * top), last_day) for _ in range(counts[i]))
            first = tx_days[0] if tx_days else cal.pick(rng, industry, 0, last_day)
            cid = ids()
            made.append((cid, tx_days))
            c = rng.random()
            classification = "important" if c < 0.08 else ("potential" if c < 0.25 else "general")
            business = rng.random() < (0.25 if is_bank else 0.1)
            yield (
                t.id, cid, name, address_as, phone, email,
                ref_format.format(i + 1) if rng.random() < 0.7 else None,
                card,
                ("+86" + MOBILE_PREFIXES[rng.randrange(len(MOBILE_PREFIXES))] + "%08d" % rng.randrange(100_000_000))
                if rng.random() < 0.05 else "",
                plate, classification, "", t.location_id,
                t.owner_id if classification == "important" else None,
                "%04d-%02d-%02d" % (rng.randrange(1950, 2004), rng.randrange(1, 13), rng.randrange(1, 29))
                if rng.random() < 0.6 else None,
                gender if rng.random() < 0.8 else "",
                COMPANIES[rng.randrange(len(COMPANIES))] if business else "",
                JOB_TITLES[rng.randrange(len(JOB_TITLES))] if business else "",
                "", "",
                1 if rng.random() < 0.7 else 0, 1 if rng.random() < 0.5 else 0, 1 if email and rng.random() < 0.4 else 0,
                self.tag_choices[rng.randrange(len(self.tag_choices))],
                None, None, cal.created[first],
            )

    def transaction_counts(self, n_customers: int, total: int) -> list[int]:
        """Heavy-tailed counts (most customers come once or twice, a few very often)
        summing exactly to ``total``; every customer has at least one when possible."""
        rng = self.rng
        if n_customers == 0:
            return []
        base = 1 if total >= n_customers else 0
        extra_mean = max(total / n_customers - base, 0.0)
        cap = max(200, int(extra_mean * 40))
        # Pareto(1.6) - 1 has mean 1/0.6: a quarter of the customers come once, a few often
        counts = [base + min(int((rng.paretovariate(1.6) - 1) * extra_mean * 0.6), cap) for _ in range(n_customers)]
        s = sum(counts)
        # bring the sum to ``total``: add or take single transactions at random
        while s != total:
            i = rng.randrange(n_customers)
            if s < total:
                counts[i] += 1
                s += 1
            elif counts[i] > base:
                counts[i] -= 1
                s -= 1
        return counts

    def transactions(self, t: TenantInfo):
        rng, cal, ids = self.rng, self.cal, self.ids
        days, created = cal.days, cal.created
        kinds = t.kinds
        kind_cum = list(itertools.accumulate(k[1] for k in kinds))
        ktotal = kind_cum[-1]
        kinds_by_pick = [kinds[bisect.bisect_left(kind_cum, (j + 0.5) * ktotal / 1000)] for j in range(1000)]
        tid, loc, owner = t.id, t.location_id, t.owner_id
        rnd = rng.random
        for cid, tx_days in self.made:
            for day in tx_days:
                kind_id, _, (lo, hi), (qlo, qhi), dept = kinds_by_pick[int(rnd() * 1000)]
                qty = qlo if qlo == qhi else qlo + int(rnd() * (qhi - qlo + 1))
                # skewed towards the low end of the range, in whole yuan with some cents
                cents = int((lo + (hi - lo) * rnd() ** 2.2) * 100) * qty
                if cents % 7 == 0:
                    cents -= cents % 100  # round prices are common
                yield (tid, ids(), cid, kind_id, loc, dept, owner if rnd() < 0.3 else None,
                       days[day], cents / 100, qty, None, "", created[day])


# --- loading ---------------------------------------------------------------------------------

BULK_PRAGMAS = {"journal_mode": "OFF", "synchronous": "OFF", "cache_size": "-1048576",
                "temp_store": "MEMORY", "foreign_keys": "OFF"}


def _pragma(dbapi, name: str, value=None):
    if value is None:
        return dbapi.execute(f"PRAGMA {name}").fetchone()[0]
    return dbapi.execute(f"PRAGMA {name}={value}").fetchone() if name == "journal_mode" else \
        dbapi.execute(f"PRAGMA {name}={value}")


def _insert(conn, sql_and_names, rows) -> None:
    sql, names = sql_and_names
    if names is not None:
        rows = [dict(zip(names, r)) for r in rows]
    conn.exec_driver_sql(sql, rows)


def _batches(rows, size):
    it = iter(rows)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def generate(url: str, *, tenants: int, customers: int, transactions: int, big_tenant: int | None = None,
             seed: int = 2026, end: dt.date = DEFAULT_END, years: int = HISTORY_YEARS,
             fresh: bool = True, check: bool | None = None, log=print) -> dict:
    """Create the database at ``url`` and fill it; returns a summary with timings."""
    from saas import migrate
    from saas.customers.models import Customer, Transaction
    from saas.db import make_engine

    t0 = time.perf_counter()
    sqlite = url.startswith("sqlite")
    if sqlite and fresh:
        from saas.db import remove_sqlite_files

        remove_sqlite_files(url[len("sqlite:///"):])
    migrate.upgrade({"DATABASE_URL": url})
    engine = make_engine(url)
    rng = random.Random(seed)
    log(f"schema ready ({time.perf_counter() - t0:.1f}s); creating {tenants} tenants")
    infos = create_tenants(engine, tenants, rng)
    t_tenants = time.perf_counter()
    log(f"{tenants} tenants created ({t_tenants - t0:.1f}s)")

    cal = make_calendar(end, years)
    last_day = len(cal.days) - 1
    # ids: milliseconds of the end date, counting up (deterministic, increasing)
    ids = IdMaker(rng, int(dt.datetime(end.year, end.month, end.day, tzinfo=dt.timezone.utc).timestamp() * 1000))
    gen = Generator(rng, cal, ids)
    customer_shares = split(customers, tenants, big_tenant)
    tx_shares = [round(transactions * c / customers) for c in customer_shares]
    tx_shares[-1] += transactions - sum(tx_shares)
    sql_c = insert_sql(engine, Customer.__table__, CUSTOMER_COLUMNS)
    sql_t = insert_sql(engine, Transaction.__table__, TRANSACTION_COLUMNS)

    done_c = done_t = 0
    with engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        saved = {}
        if sqlite:
            saved = {name: _pragma(dbapi, name) for name in BULK_PRAGMAS}
            for name, value in BULK_PRAGMAS.items():
                _pragma(dbapi, name, value)
        try:
            for n, (t, n_c, n_t) in enumerate(zip(infos, customer_shares, tx_shares), 1):
                t.customers, t.transactions = n_c, n_t
                with conn.begin():
                    for chunk in _batches(gen.customers(t, n_c, n_t, last_day), BATCH):
                        _insert(conn, sql_c, chunk)
                    for chunk in _batches(gen.transactions(t), BATCH):
                        _insert(conn, sql_t, chunk)
                done_c += n_c
                done_t += n_t
                if n == 1 or n % max(1, tenants // 20) == 0 or n == tenants:
                    el = time.perf_counter() - t_tenants
                    log(f"  tenant {n}/{tenants} ({t.industry}, {n_c:,} customers): "
                        f"{done_c:,} customers, {done_t:,} transactions, {el:.1f}s, "
                        f"{(done_c + done_t) / max(el, 1e-9):,.0f} rows/s")
        finally:
            if sqlite:
                for name, value in saved.items():
                    if name == "journal_mode":
                        value = value.upper()
                    _pragma(dbapi, name, value)
        t_load = time.perf_counter()
        if sqlite:
            if check is None:
                check = done_t <= 2_000_000
            if check:
                bad = dbapi.execute("PRAGMA foreign_key_check").fetchall()
                log(f"foreign key check: {'ok' if not bad else f'{len(bad)} violations, e.g. {bad[:3]}'}")
                if bad:
                    raise RuntimeError("generated rows violate foreign keys")
            dbapi.execute("ANALYZE")
        t_end = time.perf_counter()
    engine.dispose()
    summary = {
        "url": url, "seed": seed, "tenants": tenants, "customers": done_c, "transactions": done_t,
        "big_tenant": customer_shares[0], "history": f"{cal.days[0]} .. {cal.days[-1]}",
        "seconds_tenants": round(t_tenants - t0, 1), "seconds_load": round(t_load - t_tenants, 1),
        "seconds_analyze": round(t_end - t_load, 1), "seconds_total": round(t_end - t0, 1),
        "rows_per_second": round((done_c + done_t) / max(t_load - t_tenants, 1e-9)),
        "first_tenant": {"slug": infos[0].slug, "owner_email": infos[0].owner_email,
                         "industry": infos[0].industry, "customers": customer_shares[0]},
        "password": OWNER_PASSWORD,
    }
    log(f"done: {done_c:,} customers and {done_t:,} transactions in {t_end - t0:.1f}s "
        f"(tenants {summary['seconds_tenants']}s, load {summary['seconds_load']}s, "
        f"checks+ANALYZE {summary['seconds_analyze']}s)")
    if sqlite:
        meta = Path(url[len("sqlite:///"):] + ".json")
        meta.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--db", help="SQLite file (default instance/bench-<size>.db)")
    p.add_argument("--database-url", help="a database URL instead of --db")
    p.add_argument("--tenants", type=int)
    p.add_argument("--customers", type=int)
    p.add_argument("--transactions", type=int)
    p.add_argument("--big-tenant", type=int, help="customers of tenant #1 (default per size)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--end", type=dt.date.fromisoformat, default=DEFAULT_END, help="last day of history")


def database_url(args) -> str:
    if args.database_url:
        return args.database_url
    from saas.config import ROOT
    path = Path(args.db) if args.db else ROOT / "instance" / f"bench-{args.size}.db"
    return f"sqlite:///{path.resolve()}"


def run(args, log=print) -> dict:
    tenants, customers, transactions, big = SIZES[args.size]
    return generate(database_url(args), tenants=args.tenants or tenants, customers=args.customers or customers,
                    transactions=args.transactions or transactions,
                    big_tenant=args.big_tenant if args.big_tenant is not None else big,
                    seed=args.seed, end=args.end, log=log)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    add_arguments(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

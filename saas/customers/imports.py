"""Importing customers and transactions from CSV and XLSX files, and exporting them.

Conventions (they show in the error list the user downloads):
- Row numbers are the ones a spreadsheet shows: the header is row 1, the first data row is
  row 2 (a record spanning several lines in a CSV file still counts as one row). Row 0 is
  the file as a whole (it could not be read); errors on row 1 concern the header and the
  column mapping (a required field without a column, a column the file does not have).
- ``column`` is the file's own column header for the field (or our field's label when the
  mapping chose no column).
- All or nothing: every row is validated before anything is written. When a row fails and
  ``skip_failing`` is false nothing is written; with ``skip_failing`` the good rows are
  written and the failing ones counted as skipped.
- Duplicates inside one file: a second row with the same dedupe key (customers: the chosen
  column; transactions: the external id), or with a card number, external reference, phone
  or email that an earlier row already has, is an error "the same ... as row N". Rows of a
  transaction file *without* an external id that are identical are separate purchases
  (the CDNOW data has such rows); they are matched to stored transactions by occurrence,
  so re-importing the file changes nothing.
- Re-importing: a row whose key matches a stored record updates the fields the file maps
  when they differ (counted as updated), else it is unchanged. An empty cell never erases
  a stored value.
- Text: NUL characters are removed, surrounding spaces trimmed, oversize values refused per
  column; values starting with = + - @ are stored as plain text (never evaluated), and the
  export escapes them with a leading apostrophe, which the import removes again, so an
  export imports back unchanged.

The writes happen in the caller's session and transaction (bulk INSERT/UPDATE statements
with ``tenant_id`` set explicitly); the caller commits. Plain functions over a session, no
Flask imports except flask_babel for messages.
"""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import logging
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import PurePath

import charset_normalizer
import phonenumbers
from flask_babel import lazy_gettext as _l
from sqlalchemy import String, Uuid, and_, func, insert, or_, select, type_coerce, update
from sqlalchemy.orm import Session, defer, load_only

from saas.auth.models import Tenant
from saas.clock import now_utc
from saas.customers.models import AuditEntry, Customer, ImportJob, ImportMapping, Transaction
from saas.db import bind_tenant, bound_tenant_id, new_id
from saas.errors import NotFound, ValidationFailed
from saas.migrate import insert_customers_in_bulk
from saas import jobs
from saas.settings.models import Department, Location, TransactionKind

log = logging.getLogger("huitou.imports")

KINDS = ("customers", "transactions")
MAX_FILE_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY = 2000
BATCH = 5000
# How many errors a job keeps (the downloadable list); a file this bad needs fixing first.
MAX_STORED_ERRORS = 100_000
AMOUNT_MAX_DIGITS = 12
QUANTITY_MAX = 100_000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# --- fields -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportField:
    """A field of our model a file column can be mapped to."""

    name: str
    label: object                   # lazy gettext
    required: bool = False
    max_len: int | None = None
    # Header names that map to this field without asking (compared without case, spaces,
    # underscores and dashes).
    aliases: tuple[str, ...] = ()


CUSTOMER_FIELDS: dict[str, ImportField] = {f.name: f for f in (
    ImportField("ref", _l("External reference"), max_len=64,
                aliases=("ref", "external_ref", "external reference", "customer_ref", "customer id", "customer_id",
                         "id", "客户编号", "客户号", "客户代码", "编号", "外部编号")),
    ImportField("name", _l("Name"), required=True, max_len=120,
                aliases=("name", "full name", "customer", "customer name", "姓名", "客户姓名", "客户名称", "名称",
                         "客户", "名字")),
    ImportField("address_as", _l("Form of address"), max_len=60,
                aliases=("address_as", "address as", "salutation", "greeting", "称呼", "尊称")),
    ImportField("phone", _l("Phone"), max_len=40,
                aliases=("phone", "mobile", "tel", "telephone", "phone number", "cell", "手机", "手机号", "手机号码",
                         "电话", "联系电话", "电话号码", "移动电话")),
    ImportField("email", _l("Email"), max_len=254,
                aliases=("email", "e-mail", "mail", "email address", "邮箱", "电子邮件", "电子邮箱", "邮件")),
    ImportField("card_number", _l("Card number"), max_len=40,
                aliases=("card_number", "card number", "card", "card no", "membership card", "member card",
                         "会员卡号", "卡号", "会员卡", "会员号")),
    ImportField("classification", _l("Classification"), max_len=20,
                aliases=("classification", "class", "category", "客户分类", "分类", "客户类别", "类别")),
    ImportField("notes", _l("Notes"), max_len=2000,
                aliases=("notes", "note", "remarks", "comment", "comments", "备注", "说明")),
    ImportField("birthday", _l("Birthday"),
                aliases=("birthday", "birth date", "date of birth", "dob", "生日", "出生日期")),
    ImportField("company", _l("Company"), max_len=120,
                aliases=("company", "company name", "employer", "organisation", "organization", "公司", "单位",
                         "公司名称", "工作单位")),
    ImportField("plate_number", _l("Plate number"), max_len=20,
                aliases=("plate_number", "plate number", "plate", "licence plate", "license plate", "车牌",
                         "车牌号", "车牌号码")),
    ImportField("location", _l("Location"), max_len=120,
                aliases=("location", "branch", "store", "property", "门店", "分公司", "网点", "所属门店")),
)}

TRANSACTION_FIELDS: dict[str, ImportField] = {f.name: f for f in (
    ImportField("customer_ref", _l("Customer reference"), required=True, max_len=64,
                aliases=("customer_ref", "customer ref", "customer id", "customer_id", "customer", "ref",
                         "客户编号", "客户号", "客户代码", "会员号")),
    ImportField("occurred_on", _l("Date"), required=True,
                aliases=("occurred_on", "date", "occurred on", "transaction date", "purchase date", "日期",
                         "消费日期", "交易日期", "发生日期")),
    ImportField("amount", _l("Amount"), required=True,
                aliases=("amount", "price", "total", "value", "sum", "金额", "消费金额", "交易金额", "总额")),
    ImportField("quantity", _l("Quantity"),
                aliases=("quantity", "qty", "count", "数量", "件数")),
    ImportField("kind", _l("Kind"), max_len=120,
                aliases=("kind", "type", "transaction kind", "类型", "消费类型", "交易类型")),
    ImportField("location", _l("Location"), max_len=120,
                aliases=("location", "branch", "store", "property", "门店", "分公司", "网点")),
    ImportField("department", _l("Department"), max_len=120,
                aliases=("department", "dept", "部门")),
    ImportField("external_id", _l("External id"), max_len=64,
                aliases=("external_id", "external id", "transaction id", "transaction_id", "order id", "order no",
                         "单号", "订单号", "交易编号", "流水号")),
    ImportField("note", _l("Note"), max_len=255,
                aliases=("note", "notes", "remarks", "comment", "备注", "说明")),
)}

FIELDS = {"customers": CUSTOMER_FIELDS, "transactions": TRANSACTION_FIELDS}

# dedupe_by choices: value -> (label, the Customer column). "external_ref" is the default.
CUSTOMER_DEDUPE = {
    "external_ref": (_l("External reference"), "external_ref"),
    "card_number": (_l("Card number"), "card_number"),
    "phone": (_l("Phone"), "phone"),
    "email": (_l("Email"), "email"),
}
TRANSACTION_DEDUPE = {
    "external_id": (_l("External id (otherwise customer, date, amount, quantity and kind)"), "external_id"),
}
DEDUPE_CHOICES = {"customers": CUSTOMER_DEDUPE, "transactions": TRANSACTION_DEDUPE}

CLASSIFICATION_WORDS = {
    "important": "important", "general": "general", "potential": "potential",
    "重要": "important", "一般": "general", "潜在": "potential",
    "vip": "important", "重要客户": "important", "一般客户": "general", "潜在客户": "potential",
}

# The Customer column each customer field fills.
CUSTOMER_COLUMN = {"ref": "external_ref", "location": "location_id"}


# --- results ----------------------------------------------------------------------------

@dataclass
class RowError:
    """A problem with one cell (or row, or the header) of the file; see the module's
    docstring for the row numbering. ``message`` is a lazy gettext string."""

    row: int
    column: str
    message: object

    def as_dict(self) -> dict:
        """JSON-safe: the message is kept untranslated (msgid and parameters) so that it
        can be shown later in the language of whoever reads it."""
        msgid, params = message_parts(self.message)
        return {"row": self.row, "column": self.column, "msgid": msgid, "params": params}

    @classmethod
    def from_dict(cls, data: dict) -> "RowError":
        return cls(row=data["row"], column=data.get("column", ""),
                   message=_l(data["msgid"], **(data.get("params") or {})))


def message_parts(message) -> tuple[str, dict]:
    args, kwargs = getattr(message, "_args", None), getattr(message, "_kwargs", None)
    if args:
        return str(args[0]), {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in (kwargs or {}).items()}
    return str(message).replace("%", "%%"), {}


@dataclass
class ImportResult:
    """What an import did (or, for a dry run or a refused import, would do): counts of data
    rows, and the errors. ``written`` says whether anything was written."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    total: int = 0
    customers_created: int = 0   # transactions: customers made from an unknown customer_ref
    written: bool = False

    @property
    def failed_rows(self) -> set[int]:
        return {e.row for e in self.errors}


class _Bad(Exception):
    """One cell's value is refused; ``message`` says why (lazy gettext)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


# --- reading files ----------------------------------------------------------------------

def read_table(filename: str, content: bytes) -> tuple[list[str], Iterator[list]]:
    """The header and the data rows of a CSV or XLSX file.

    CSV: the text encoding is detected (UTF-8 with or without BOM, UTF-16 with BOM, GBK /
    GB18030 and others through charset-normalizer) and the delimiter (comma, semicolon or
    tab) from the header line. XLSX: the first worksheet, with the cached values of formula
    cells. Data rows are lists of cell values (str for CSV; str, numbers, dates or None for
    XLSX), every row of the file including blank ones, in order.

    Raises ValidationFailed on the field "file" when the file cannot be read, has no header
    or repeats a column name.
    """
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        headers, rows = _read_csv(content)
    elif suffix in (".xlsx", ".xlsm"):
        headers, rows = _read_xlsx(content)
    elif suffix == ".xls":
        raise ValidationFailed.one("file", _l("Old Excel files (.xls) cannot be read: save the file as .xlsx or CSV."))
    else:
        raise ValidationFailed.one("file", _l("Choose a CSV or XLSX file."))
    seen = set()
    for h in headers:
        if h and h in seen:
            raise ValidationFailed.one("file", _l("The column “%(name)s” appears twice in the header row.", name=h))
        seen.add(h)
    if not any(headers):
        raise ValidationFailed.one("file", _l("The file is empty: its first row must name the columns."))
    return headers, rows


# How much more "chaos" (charset-normalizer's measure of implausible text) a Chinese
# reading may have than the best reading and still win: a short GBK file can read as
# Thai (cp874) with slightly less chaos, and for this product's users Chinese is likelier.
_CHINESE_MARGIN = 0.05


def _is_chinese(encoding: str) -> bool:
    name = encoding.replace("_", "").lower()
    return name in ("gb2312", "gbk", "gb18030", "hz") or name.startswith("big5")


def _guess_encoding(sample: bytes) -> str:
    """charset-normalizer's best guess, except that a Chinese encoding among its readings
    within _CHINESE_MARGIN of the best is preferred; "" when it has none."""
    results = charset_normalizer.from_bytes(sample)
    best = results.best()
    if best is None:
        return ""
    for match in results:
        if _is_chinese(match.encoding) and match.chaos <= best.chaos + _CHINESE_MARGIN:
            return match.encoding
    return best.encoding


def decode_text(content: bytes) -> str:
    """The text of a CSV file in whatever encoding it came in; raises ValidationFailed."""
    if content.startswith(codecs.BOM_UTF8):
        encodings = ["utf-8-sig"]
    elif content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    else:
        encodings = ["utf-8"]
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            pass
        guess = _guess_encoding(content[:500_000])
        # Excel in China saves "CSV" in GBK; GB18030 is its superset and decodes GB2312 too.
        # Big5 bytes mostly decode as GB18030 too, into the wrong characters: Big5 first.
        if guess.startswith("big5"):
            encodings = [guess, "gb18030"]
        elif not guess or _is_chinese(guess):
            encodings = ["gb18030"]
        else:
            encodings = [guess, "gb18030"]
    for encoding in encodings:
        try:
            return content.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    raise ValidationFailed.one("file", _l("The file's text encoding could not be recognised. "
                                          "Save it as “CSV UTF-8” and upload it again."))


def _read_csv(content: bytes) -> tuple[list[str], Iterator[list]]:
    text = decode_text(content).replace("\x00", "")
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: (counts[d], d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    if header is None:
        raise ValidationFailed.one("file", _l("The file is empty: its first row must name the columns."))
    headers = [_cell_text(h).lstrip("\ufeff") for h in header]

    def rows():
        row_no = 1
        try:
            for row in reader:
                row_no += 1
                yield row
        except csv.Error:
            raise ValidationFailed.one("file", _l("Row %(row)s could not be read: check its quotes.",
                                                  row=row_no + 1)) from None

    return headers, rows()


def _read_xlsx(content: bytes) -> tuple[list[str], Iterator[list]]:
    import openpyxl

    with warnings.catch_warnings():
        # openpyxl warns about styles and extensions it does not know; they do not matter here.
        warnings.simplefilter("ignore")
        try:
            wb = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        except Exception:
            raise ValidationFailed.one("file", _l("The file is not a valid XLSX workbook.")) from None
        try:
            sheets = [ws for ws in wb.worksheets if hasattr(ws, "iter_rows")]
            if not sheets:
                raise ValidationFailed.one("file", _l("The file is empty: its first row must name the columns."))
            ws = sheets[0]
            ws.reset_dimensions()  # some writers store a wrong size; read what is there
            all_rows = [list(r) for r in ws.iter_rows(values_only=True)]
        except ValidationFailed:
            raise
        except Exception:
            raise ValidationFailed.one("file", _l("The file is not a valid XLSX workbook.")) from None
        finally:
            wb.close()
    if not all_rows:
        raise ValidationFailed.one("file", _l("The file is empty: its first row must name the columns."))
    header = all_rows[0]
    while header and header[-1] in (None, ""):
        header.pop()
    return [_cell_text(h) for h in header], iter(all_rows[1:])


# --- cell values ------------------------------------------------------------------------

def _cell_text(value) -> str:
    """A cell as text: NUL removed, spaces trimmed, integral floats without ".0", and our
    export's protective apostrophe (before = + - @) removed."""
    if type(value) is str and "\x00" not in value and not value.startswith("'"):
        return value.strip()  # the common case, first
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    text = text.strip()
    if len(text) > 1 and text[0] == "'" and text[1] in "=+-@\t\r":
        text = text[1:].strip()
    return text


_ISO_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]00:00(?::00)?)?")
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_ZH_DATE = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日?")
MIN_DATE = dt.date(1900, 1, 1)


def parse_date(value) -> dt.date:
    """A date from YYYY-MM-DD (also with / or .), YYYYMMDD, 2024年3月5日 or an XLSX date
    cell; raises _Bad."""
    if isinstance(value, dt.datetime):
        day = value.date()
    elif isinstance(value, dt.date):
        day = value
    else:
        text = _cell_text(value)
        m = _ISO_DATE.fullmatch(text) or _COMPACT_DATE.fullmatch(text) or _ZH_DATE.fullmatch(text)
        if not m:
            raise _Bad(_l("Enter a date such as 2026-03-31."))
        try:
            day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise _Bad(_l("Enter a date such as 2026-03-31.")) from None
    if day < MIN_DATE:
        raise _Bad(_l("Enter a date such as 2026-03-31."))
    return day


_PLAIN_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?|-?\.[0-9]+")
_GROUPED = re.compile(r"-?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?")


def parse_amount(value) -> Decimal:
    """An amount of money: at least 0, at most 2 decimal places and 12 digits; a currency
    sign and thousands separators (1,234.50) are allowed. Raises _Bad."""
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, float):
        text = repr(value)
        if "e" in text or "E" in text:
            text = format(Decimal(text), "f")
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = _cell_text(value)
    if _PLAIN_AMOUNT.fullmatch(text):
        return Decimal(text).quantize(Decimal("0.01"))
    text = text.replace(" ", "").lstrip("¥￥$€£").replace("RMB", "").replace("元", "")
    if text.startswith("-") and len(text) > 1 and text[1] in "¥￥$€£":
        text = "-" + text[2:]
    if _GROUPED.fullmatch(text):
        text = text.replace(",", "")
    if not text:
        raise _Bad(_l("This field is required."))
    if not _NUMBER.fullmatch(text):
        raise _Bad(_l("Enter an amount such as 120 or 120.50."))
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise _Bad(_l("Enter an amount such as 120 or 120.50.")) from None
    if amount < 0:
        raise _Bad(_l("The amount cannot be negative."))
    if amount != amount.quantize(Decimal("0.01")):
        raise _Bad(_l("Use at most 2 decimal places."))
    amount = amount.quantize(Decimal("0.01"))
    if len(amount.as_tuple().digits) > AMOUNT_MAX_DIGITS:
        raise _Bad(_l("Use at most %(n)s digits.", n=AMOUNT_MAX_DIGITS))
    return amount


def parse_quantity(value) -> int:
    """A whole number from 1 to QUANTITY_MAX (1 for an empty cell); raises _Bad."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    else:
        text = _cell_text(value)
        if not text:
            return 1
        if text.endswith(".0"):
            text = text[:-2]
        if not (text.isascii() and text.isdigit()):
            raise _Bad(_l("Enter a whole number from %(min)s to %(max)s.", min=1, max=QUANTITY_MAX))
        n = int(text)
    if not 1 <= n <= QUANTITY_MAX:
        raise _Bad(_l("Enter a whole number from %(min)s to %(max)s.", min=1, max=QUANTITY_MAX))
    return n


_PHONE_CHARS = re.compile(r"[0-9+\s\-().]+")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def parse_phone(text: str, region: str) -> str:
    """A phone number in E.164 (+8613800138000), read as one of ``region`` when it has no
    country code; raises _Bad."""
    if len(text) > 40 or not _PHONE_CHARS.fullmatch(text):
        raise _Bad(_l("Enter a phone number such as 138 0013 8000, or with its country code such as +44 20 7946 0958."))
    compact = re.sub(r"[\s\-().]", "", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise _Bad(_l("Enter a phone number such as 138 0013 8000, or with its country code such as +44 20 7946 0958."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _plain(text: str, limit: int | None) -> str:
    if limit is not None and len(text) > limit:
        raise _Bad(_l("At most %(n)s characters.", n=limit))
    return text


def _no_markup(text: str) -> str:
    if "<" in text or ">" in text:
        raise _Bad(_l("Use plain text: the characters < and > are not allowed."))
    return text


# --- mapping ----------------------------------------------------------------------------

def _squash(header: str) -> str:
    return re.sub(r"[\s_\-:：()（）]", "", (header or "").lower())


def guess_mapping(kind: str, headers: list[str]) -> dict[str, str]:
    """Our field -> the file's header, guessed from the header names (English and Chinese)."""
    squashed = {_squash(h): h for h in reversed(headers) if h}
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for name, spec in FIELDS[kind].items():
        for alias in (name,) + spec.aliases:
            header = squashed.get(_squash(alias))
            if header and header not in used:
                mapping[name] = header
                used.add(header)
                break
    return mapping


def suggest_mapping(s: Session, kind: str, headers: list[str]) -> dict[str, str]:
    """The mapping the tenant used last time for this kind (columns this file still has),
    completed by guessing from the header names."""
    guessed = guess_mapping(kind, headers)
    remembered = s.scalar(select(ImportMapping).where(ImportMapping.kind == kind))
    if remembered is None:
        return guessed
    present = set(headers)
    mapping = {f: h for f, h in (remembered.mapping or {}).items() if f in FIELDS[kind] and h in present}
    used = set(mapping.values())
    for f, h in guessed.items():
        if f not in mapping and h not in used:
            mapping[f] = h
            used.add(h)
    return mapping


def remember_mapping(s: Session, kind: str, mapping: dict[str, str]) -> None:
    """Keep ``mapping`` as the tenant's mapping for ``kind`` (suggested next time)."""
    clean = {f: h for f, h in mapping.items() if f in FIELDS[kind] and h}
    row = s.scalar(select(ImportMapping).where(ImportMapping.kind == kind))
    if row is None:
        s.add(ImportMapping(kind=kind, mapping=clean))
    else:
        row.mapping = clean
    s.flush()


def check_mapping(kind: str, headers: list[str], mapping: dict[str, str], dedupe_by: str) -> list[RowError]:
    """Errors of the mapping itself (reported on row 1)."""
    fields = FIELDS[kind]
    errors = []
    present = set(headers)
    for name, header in mapping.items():
        if name not in fields:
            errors.append(RowError(1, str(header or name), _l("“%(field)s” is not a field of this import.", field=name)))
        elif header and header not in present:
            errors.append(RowError(1, str(header), _l("The file has no column “%(name)s”.", name=header)))
    for name, spec in fields.items():
        if spec.required and not mapping.get(name):
            errors.append(RowError(1, str(spec.label), _l("Choose the column that holds “%(field)s”: it is required.",
                                                          field=spec.label)))
    choices = DEDUPE_CHOICES[kind]
    if dedupe_by not in choices:
        errors.append(RowError(1, "", _l("Choose one of the listed values.")))
    elif kind == "customers" and dedupe_by != "external_ref":
        field_name = _customer_field_of(choices[dedupe_by][1])
        if not mapping.get(field_name):
            errors.append(RowError(1, str(fields[field_name].label),
                                   _l("Choose the column that holds “%(field)s” to find existing customers by it.",
                                      field=fields[field_name].label)))
    return errors


def _customer_field_of(column: str) -> str:
    return {v: k for k, v in CUSTOMER_COLUMN.items()}.get(column, column)


def _normalise_dedupe(kind: str, dedupe_by: str) -> str:
    if kind == "customers" and dedupe_by == "ref":
        return "external_ref"
    if kind == "transactions" and dedupe_by in ("external_ref", "external_id", "", None):
        return "external_id"
    return dedupe_by


# --- the import -------------------------------------------------------------------------

class _Lookup:
    """A tenant's active locations, departments or kinds by code or name (any case)."""

    def __init__(self, entries):
        self.by_key: dict[str, uuid.UUID] = {}
        for e in entries:
            for key in (e.name_en, e.name_zh, e.code):  # the code wins over a name
                self.by_key[key.strip().casefold()] = e.id
        self.codes = ", ".join(e.code for e in entries)
        self.cache: dict[str, uuid.UUID] = {}

    def find(self, text: str) -> uuid.UUID:
        found = self.cache.get(text)
        if found is None:
            found = self.by_key.get(text.casefold())
            if found is None:
                raise _Bad(_l("Unknown code “%(code)s”. Use one of: %(codes)s.", code=text, codes=self.codes or "—"))
            self.cache[text] = found
        return found


def _lookup(s: Session, model) -> _Lookup:
    return _Lookup(list(s.scalars(select(model).where(model.active.is_(True)).order_by(model.position, model.code))))


def _tenant_region(s: Session) -> str:
    tenant = s.get(Tenant, bound_tenant_id(s))
    return ((tenant.country if tenant is not None else None) or "CN").upper()


def import_file(s: Session, kind: str, filename: str, content: bytes, mapping: dict[str, str], *,
                dedupe_by: str = "external_ref", skip_failing: bool = False, created_by_id=None,
                progress: Callable[[int, int], None] | None = None, as_of: dt.date | None = None,
                dry_run: bool = False) -> ImportResult:
    """Import customers or transactions of the bound tenant from a CSV or XLSX file.

    ``mapping`` maps our field names (CUSTOMER_FIELDS / TRANSACTION_FIELDS) to the file's
    column headers. ``dedupe_by`` (customers: external_ref, card_number, phone or email;
    transactions: always the external id, else customer, date, amount, quantity and kind)
    finds the stored record a row updates. ``progress(done, total)`` is called every
    PROGRESS_EVERY rows while validating and once more when everything is written.
    ``as_of`` (the tenant's today) refuses dates after it. ``dry_run`` validates and counts
    without writing. See the module docstring for row numbers and the all-or-nothing rule.

    Never raises for bad input: a file that cannot be read is an error on row 0.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}")
    dedupe_by = _normalise_dedupe(kind, dedupe_by)
    mapping = {k: v for k, v in (mapping or {}).items() if v}
    result = ImportResult()
    try:
        headers, rows_iter = read_table(filename, content)
        rows = list(rows_iter)
    except ValidationFailed as exc:
        result.errors = [RowError(0, "", m) for msgs in exc.errors.values() for m in msgs]
        return result
    result.errors = check_mapping(kind, headers, mapping, dedupe_by)
    if result.errors:
        return result
    if kind == "customers":
        plan = _CustomerImport(s, headers, mapping, dedupe_by, as_of)
    else:
        plan = _TransactionImport(s, headers, mapping, as_of)
    total = len(rows)
    for i, row in enumerate(rows):
        if i and progress is not None and i % PROGRESS_EVERY == 0:
            progress(i, total)
        if _blank(row):
            continue  # a blank line is not a row of data
        result.total += 1
        plan.add(i + 2, row)
    result.errors = sorted(plan.errors, key=lambda e: e.row)
    failed = result.failed_rows
    result.skipped = len(failed) if skip_failing else 0
    result.created, result.updated, result.unchanged = plan.counts()
    result.customers_created = len(getattr(plan, "new_customers", ()))
    if failed and not skip_failing:
        if not dry_run:
            result.created = result.updated = result.unchanged = result.customers_created = 0
        return result
    if not dry_run and (result.created or result.updated):
        plan.write()
        result.written = True
        s.add(AuditEntry(actor_user_id=created_by_id, action="import", object_type=kind,
                         details={"filename": filename[:255], "created": result.created, "updated": result.updated,
                                  "unchanged": result.unchanged, "skipped": result.skipped}))
        s.flush()
    if progress is not None:
        progress(total, total)
    return result


def _blank(row: list) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in row)


def _bulk_insert_customers(s: Session, rows: list[dict]) -> None:
    """New customers in bulk; past a few hundred, the phone search index is filled once
    for the batch rather than by its trigger per row (see saas.migrate)."""
    if len(rows) < 500:
        _bulk_insert(s, Customer, rows)
    else:
        insert_customers_in_bulk(s.connection(), lambda: _bulk_insert(s, Customer, rows))


def _bulk_insert(s: Session, model, rows: list[dict]) -> None:
    """INSERT ``rows`` (dicts with the same keys, tenant_id and id set explicitly) into
    ``model``'s table in batches of BATCH.

    SQLite takes the statement compiled once and parameters converted by the columns' own
    bind processors (each distinct date, amount or time once): SQLAlchemy's per-row
    parameter handling would cost more than the database itself. Elsewhere a Core
    executemany INSERT."""
    if not rows:
        return
    table = model.__table__
    conn = s.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite" or dialect.paramstyle != "qmark":
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(table), rows[start:start + BATCH])
        return
    keys = list(rows[0])
    compiled = insert(table).compile(dialect=dialect, column_keys=keys)
    order = list(compiled.positiontup)
    converters = []
    for key in order:
        column = table.c[key]
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None and not isinstance(column.type, Uuid):
            process = _Memo(process)
        converters.append((key, process))
    sql = compiled.string
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        columns = []
        for key, process in converters:   # column by column: one converter per list
            values = [row[key] for row in batch]
            if process is not None:
                values = [None if v is None else process(v) for v in values]
            columns.append(values)
        conn.exec_driver_sql(sql, list(zip(*columns)))


def _bulk_update(s: Session, model, rows: list[dict]) -> None:
    # ORM bulk UPDATE by primary key (tenant_id, id): each dict names the row it changes.
    for start in range(0, len(rows), BATCH):
        s.execute(update(model), rows[start:start + BATCH])


class _RowReader:
    """Reads the mapped cells of a row: (field, value) with the value parsed."""

    def __init__(self, headers: list[str], mapping: dict[str, str]):
        index = {h: i for i, h in enumerate(headers) if h}
        self.columns = {f: (index[h], h) for f, h in mapping.items() if h in index}

    def cell(self, row: list, name: str):
        spec = self.columns.get(name)
        if spec is None:
            return None
        i = spec[0]
        return row[i] if i < len(row) else None

    def header(self, name: str, fields: dict[str, ImportField]) -> str:
        spec = self.columns.get(name)
        return spec[1] if spec else str(fields[name].label)


class _CustomerImport:
    COLUMNS = ("external_ref", "name", "address_as", "phone", "email", "card_number", "classification", "notes",
               "birthday", "company", "plate_number", "location_id")
    UNIQUE = ("external_ref", "card_number", "phone", "email")

    def __init__(self, s: Session, headers, mapping, dedupe_by: str, as_of):
        self.s = s
        self.tid = bound_tenant_id(s)
        self.reader = _RowReader(headers, mapping)
        self.fields = [f for f in CUSTOMER_FIELDS if f in self.reader.columns]
        self.dedupe_col = CUSTOMER_DEDUPE[dedupe_by][1]
        self.as_of = as_of
        self.region = _tenant_region(s)
        self.locations = _lookup(s, Location) if "location" in self.fields else None
        self.errors: list[RowError] = []
        self.creates: list[dict] = []
        self.updates: list[dict] = []
        self.unchanged = 0
        cols = [getattr(Customer, c) for c in ("id",) + self.COLUMNS]
        self.existing: dict[uuid.UUID, dict] = {}
        self.index: dict[str, dict[str, list[uuid.UUID]]] = {c: {} for c in self.UNIQUE}
        t = Customer.__table__
        for data in s.execute(select(*[t.c[c.key] for c in cols]).where(t.c.tenant_id == self.tid)).mappings():
            self.existing[data["id"]] = data
            for c in self.UNIQUE:
                value = data[c]
                if value:
                    self.index[c].setdefault(value.lower() if c == "email" else value, []).append(data["id"])
        self.in_file: dict[str, dict[str, int]] = {c: {} for c in self.UNIQUE}

    def _clean(self, row_no: int, row: list) -> dict | None:
        clean: dict = {}
        ok = True
        for name in self.fields:
            raw = self.reader.cell(row, name)
            try:
                clean[CUSTOMER_COLUMN.get(name, name)] = self._parse(name, raw)
            except _Bad as bad:
                ok = False
                self.errors.append(RowError(row_no, self.reader.header(name, CUSTOMER_FIELDS), bad.message))
        return clean if ok else None

    def _parse(self, name: str, raw):
        spec = CUSTOMER_FIELDS[name]
        if name == "birthday":
            if raw in (None, "") or (isinstance(raw, str) and not raw.strip()):
                return None
            day = parse_date(raw)
            if self.as_of is not None and day > self.as_of:
                raise _Bad(_l("The date cannot be in the future."))
            return day
        text = _plain(_cell_text(raw), spec.max_len)
        if name == "name":
            if not text:
                raise _Bad(_l("This field is required."))
            return _no_markup(text)
        if not text:
            return None if name in ("ref", "card_number", "location") else ""
        if name in ("ref", "card_number", "address_as"):
            return _no_markup(text)
        if name == "phone":
            return parse_phone(text, self.region)
        if name == "email":
            text = text.lower()
            if not EMAIL_RE.match(text):
                raise _Bad(_l("Enter a valid email address."))
            return text
        if name == "classification":
            value = CLASSIFICATION_WORDS.get(text.casefold())
            if value is None:
                raise _Bad(_l("Use one of: important, general, potential (重要, 一般, 潜在)."))
            return value
        if name == "location":
            return self.locations.find(text)
        return text

    def add(self, row_no: int, row: list) -> None:
        clean = self._clean(row_no, row)
        if clean is None:
            return
        # The record this row updates, found by the dedupe column.
        key = clean.get(self.dedupe_col)
        match = None
        if key:
            found = self.index[self.dedupe_col].get(key, [])
            if len(found) > 1:
                self._error(row_no, self.dedupe_col,
                            _l("%(count)s customers have this value: choose another column to find customers by.",
                               count=len(found)))
                return
            match = found[0] if found else None
        bad = False
        for col in self.UNIQUE:
            value = clean.get(col)
            if not value:
                continue
            earlier = self.in_file[col].get(value)
            if earlier is not None:
                self._error(row_no, col, _l("The same value as in row %(row)s.", row=earlier))
                bad = True
                continue
            owners = [i for i in self.index[col].get(value, []) if i != match]
            if owners:
                self._error(row_no, col, _DUPLICATE[col](self.existing[owners[0]]["name"]))
                bad = True
        if bad:
            return
        for col in self.UNIQUE:
            if clean.get(col):
                self.in_file[col][clean[col]] = row_no
        if match is None:
            record = {c: None for c in self.COLUMNS}
            record.update(address_as="", phone="", email="", classification="general", notes="", company="",
                          plate_number="")
            record.update({k: v for k, v in clean.items() if v not in (None, "")})
            record.update(tenant_id=self.tid, id=new_id())
            self.creates.append(record)
            return
        old = self.existing[match]
        changes = {c: v for c, v in clean.items() if v not in (None, "") and old[c] != v}
        if changes:
            changes.update(tenant_id=self.tid, id=match)
            self.updates.append(changes)
        else:
            self.unchanged += 1

    def _error(self, row_no: int, col: str, message) -> None:
        self.errors.append(RowError(row_no, self.reader.header(_customer_field_of(col), CUSTOMER_FIELDS), message))

    def counts(self) -> tuple[int, int, int]:
        return len(self.creates), len(self.updates), self.unchanged

    def write(self) -> None:
        now = now_utc()
        for r in self.creates:
            r.update(created_at=now, phone_alt="", gender="", job_title="", company_industry="", company_size="",
                     consent_phone=False, consent_sms=False, consent_email=False, tags=[])
        _bulk_insert_customers(self.s, self.creates)
        # Rows with the same set of changed columns go together (one statement shape each).
        groups: dict[tuple, list[dict]] = {}
        for u in self.updates:
            groups.setdefault(tuple(sorted(u)), []).append(u)
        for group in groups.values():
            _bulk_update(self.s, Customer, group)


_DUPLICATE = {
    "phone": lambda name: _l("This phone number already belongs to %(name)s.", name=name),
    "email": lambda name: _l("This email address already belongs to %(name)s.", name=name),
    "external_ref": lambda name: _l("This external reference already belongs to %(name)s.", name=name),
    "card_number": lambda name: _l("This card number already belongs to %(name)s.", name=name),
}


class _Memo(dict):
    """Converts each distinct raw value once."""

    def __init__(self, convert):
        super().__init__()
        self.convert = convert

    def __call__(self, raw):
        if raw is None:
            return None
        try:
            return self[raw]
        except KeyError:
            value = self[raw] = self.convert(raw)
            return value
        except TypeError:  # unhashable (a JSON list)
            return self.convert(raw)


def _to_uuid(raw) -> uuid.UUID:
    return raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))


def _to_date(raw) -> dt.date:
    return raw if isinstance(raw, dt.date) else dt.date.fromisoformat(str(raw)[:10])


def _to_amount(raw) -> Decimal:
    if isinstance(raw, float):
        return Decimal(f"{raw:.2f}")
    return Decimal(str(raw)).quantize(Decimal("0.01"))


class _TransactionImport:
    def __init__(self, s: Session, headers, mapping, as_of):
        self.s = s
        self.tid = bound_tenant_id(s)
        self.reader = _RowReader(headers, mapping)
        self.as_of = as_of
        cols = self.reader.columns
        self.idx = {name: cols[name][0] if name in cols else None for name in TRANSACTION_FIELDS}
        self.kinds = _lookup(s, TransactionKind)
        self.locations = _lookup(s, Location) if "location" in cols else None
        self.departments = _lookup(s, Department) if "department" in cols else None
        default = s.scalars(select(TransactionKind).where(TransactionKind.active.is_(True))
                            .order_by(TransactionKind.is_default.desc(), TransactionKind.position)).first()
        self.default_kind = default.id if default else None
        self.errors: list[RowError] = []
        self.creates: list[dict] = []
        self.updates: list[dict] = []
        self.unchanged = 0
        # customer_ref -> customer id; customers merged into another count as the survivor.
        self.customers: dict[str, uuid.UUID] = {}
        t = Customer.__table__
        for ref, cid, merged in s.execute(select(t.c.external_ref, t.c.id, t.c.merged_into_id)
                                          .where(t.c.tenant_id == self.tid, t.c.external_ref.is_not(None))):
            self.customers[ref] = merged or cid
        self.new_customers: dict[str, uuid.UUID] = {}
        self.known_customers = set(self.customers.values())
        # Stored transactions: by external id, and (without one) by their identifying tuple.
        self.by_external: dict[str, dict] | None = None
        self.by_tuple: dict[tuple, list[dict]] | None = None
        self.in_file: dict[str, int] = {}
        self.date_cache: dict[str, dt.date | _Bad] = {}
        self.amount_cache: dict[str, Decimal | _Bad] = {}

    def _load_existing(self) -> None:
        # Read as raw values and convert each distinct value once: building a UUID, a date
        # or a Decimal per cell would cost more than the rest of the import.
        self.by_external, self.by_tuple = {}, {}
        t = Transaction.__table__
        raw = [type_coerce(t.c[name], String) for name in ("customer_id", "occurred_on", "amount", "kind_id",
                                                           "location_id", "department_id")]
        q = select(type_coerce(t.c.id, String), *raw, t.c.quantity, t.c.note, t.c.external_id).where(t.c.tenant_id == self.tid)
        uuids, dates, amounts = _Memo(_to_uuid), _Memo(_to_date), _Memo(_to_amount)
        for tx_id, cid, day, amount, kind_id, loc, dept, quantity, note, external_id in self.s.execute(q):
            data = {"id": tx_id, "customer_id": uuids(cid), "occurred_on": dates(day), "amount": amounts(amount),
                    "quantity": quantity, "kind_id": uuids(kind_id), "location_id": uuids(loc),
                    "department_id": uuids(dept), "note": note or ""}
            if external_id:
                self.by_external[external_id] = data
            else:
                key = (data["customer_id"], data["occurred_on"], data["amount"], quantity, data["kind_id"])
                self.by_tuple.setdefault(key, []).append(data)

    def _cached(self, cache: dict, parse, raw):
        if isinstance(raw, str):
            hit = cache.get(raw)
            if hit is None:
                try:
                    hit = parse(raw)
                except _Bad as bad:
                    hit = bad
                cache[raw] = hit
            if isinstance(hit, _Bad):
                raise hit
            return hit
        return parse(raw)

    def add(self, row_no: int, row: list) -> None:
        # The hot loop of a large import: plain locals, no per-row closures.
        idx = self.idx
        n = len(row)
        errors = None

        def fail(name, message):
            nonlocal errors
            if errors is None:
                errors = []
            errors.append(RowError(row_no, self.reader.header(name, TRANSACTION_FIELDS), message))

        i = idx["customer_ref"]
        ref = _cell_text(row[i]) if i < n else ""
        if not ref:
            fail("customer_ref", _l("This field is required."))
        elif len(ref) > 64:
            fail("customer_ref", _l("At most %(n)s characters.", n=64))
        occurred_on = None
        i = idx["occurred_on"]
        raw = row[i] if i < n else None
        if raw is None or raw == "":
            fail("occurred_on", _l("This field is required."))
        else:
            try:
                occurred_on = self._cached(self.date_cache, parse_date, raw)
                if self.as_of is not None and occurred_on > self.as_of:
                    fail("occurred_on", _l("The date cannot be in the future."))
            except _Bad as bad:
                fail("occurred_on", bad.message)
        amount = None
        i = idx["amount"]
        raw = row[i] if i < n else None
        if raw is None or raw == "":
            fail("amount", _l("This field is required."))
        else:
            try:
                amount = self._cached(self.amount_cache, parse_amount, raw)
            except _Bad as bad:
                fail("amount", bad.message)
        quantity = 1
        i = idx["quantity"]
        if i is not None and i < n and row[i] != "1":
            try:
                quantity = parse_quantity(row[i])
            except _Bad as bad:
                fail("quantity", bad.message)
        kind_id = self.default_kind
        i = idx["kind"]
        text = _cell_text(row[i]) if i is not None and i < n else ""
        if text:
            try:
                kind_id = self.kinds.find(text)
            except _Bad as bad:
                fail("kind", bad.message)
        elif kind_id is None:
            fail("kind", _l("This field is required."))
        location_id = department_id = None
        i = idx["location"]
        if i is not None and i < n:
            text = _cell_text(row[i])
            if text:
                try:
                    location_id = self.locations.find(text)
                except _Bad as bad:
                    fail("location", bad.message)
        i = idx["department"]
        if i is not None and i < n:
            text = _cell_text(row[i])
            if text:
                try:
                    department_id = self.departments.find(text)
                except _Bad as bad:
                    fail("department", bad.message)
        external_id = None
        i = idx["external_id"]
        if i is not None and i < n:
            external_id = _cell_text(row[i]) or None
            if external_id and len(external_id) > 64:
                fail("external_id", _l("At most %(n)s characters.", n=64))
        note = ""
        i = idx["note"]
        if i is not None and i < n:
            note = _cell_text(row[i])
            if len(note) > 255:
                fail("note", _l("At most %(n)s characters.", n=255))
        if external_id and not errors:
            earlier = self.in_file.get(external_id)
            if earlier is not None:
                fail("external_id", _l("The same value as in row %(row)s.", row=earlier))
        if errors:
            self.errors.extend(errors)
            return
        customer_id = self.customers.get(ref)
        if customer_id is None:
            customer_id = self.new_customers.get(ref)
            if customer_id is None:
                customer_id = self.new_customers[ref] = new_id()
        values = {"customer_id": customer_id, "occurred_on": occurred_on, "amount": amount, "quantity": quantity,
                  "kind_id": kind_id}
        extra = {"location_id": location_id, "department_id": department_id, "note": note}
        old = None
        if customer_id in self.known_customers or external_id:
            if self.by_external is None:
                self._load_existing()
            if external_id:
                self.in_file[external_id] = row_no
                old = self.by_external.get(external_id)
            else:
                pool = self.by_tuple.get((customer_id, occurred_on, amount, quantity, kind_id))
                old = pool.pop() if pool else None
        if old is None:
            values.update(extra, tenant_id=self.tid, id=new_id(), external_id=external_id, staff_user_id=None)
            self.creates.append(values)
            return
        # A matched tuple already equals the row's customer, date, amount, quantity and kind.
        new = {**values, **extra} if external_id else extra
        changes = {k: v for k, v in new.items()
                   if (v not in (None, "") or k not in ("location_id", "department_id", "note")) and old[k] != v}
        if changes:
            changes.update(tenant_id=self.tid, id=_to_uuid(old["id"]))
            self.updates.append(changes)
        else:
            self.unchanged += 1

    def counts(self) -> tuple[int, int, int]:
        return len(self.creates), len(self.updates), self.unchanged

    def write(self) -> None:
        now = now_utc()
        customers = [{"tenant_id": self.tid, "id": cid, "name": ref[:120], "external_ref": ref, "address_as": "",
                      "phone": "", "email": "", "card_number": None, "phone_alt": "", "plate_number": "",
                      "classification": "general", "notes": "", "location_id": None, "owner_user_id": None,
                      "birthday": None, "gender": "", "company": "", "job_title": "", "company_industry": "",
                      "company_size": "", "consent_phone": False, "consent_sms": False, "consent_email": False,
                      "tags": [], "merged_into_id": None, "erased_at": None, "created_at": now}
                     for ref, cid in self.new_customers.items()]
        _bulk_insert_customers(self.s, customers)
        for r in self.creates:
            r["created_at"] = now
        _bulk_insert(self.s, Transaction, self.creates)
        groups: dict[tuple, list[dict]] = {}
        for u in self.updates:
            groups.setdefault(tuple(sorted(u)), []).append(u)
        for group in groups.values():
            _bulk_update(self.s, Transaction, group)


# --- import jobs (upload, map, preview, run in the background) --------------------------

PREVIEW_ROWS = 20
STATUSES = ("uploaded", "running", "done", "failed")

# Progress of the jobs running in this process: job id -> (done, total). SQLite lets only
# one transaction write at a time and the import holds it, so progress cannot be written
# to the job row while the import runs; PostgreSQL gets it written there too (throttled),
# for polls answered by another worker process.
_progress: dict[uuid.UUID, tuple[int, int]] = {}
_progress_lock = threading.Lock()


def create_job(s: Session, kind: str, filename: str, content: bytes, created_by_id) -> ImportJob:
    """Store an uploaded file as an import job of the bound tenant, with a suggested
    mapping. Raises ValidationFailed (field "kind" or "file") for an unknown kind, an
    empty, too large or unreadable file."""
    if kind not in KINDS:
        raise ValidationFailed.one("kind", _l("Choose one of the listed values."))
    if not content:
        raise ValidationFailed.one("file", _l("The file is empty: its first row must name the columns."))
    if len(content) > MAX_FILE_BYTES:
        raise ValidationFailed.one("file", _l("The file is larger than %(n)s MB.", n=MAX_FILE_BYTES // (1024 * 1024)))
    name = PurePath((filename or "").replace("\\", "/")).name[-255:] or "upload"
    headers, rows = read_table(name, content)
    total = sum(1 for r in rows if not _blank(r))
    job = ImportJob(kind=kind, filename=name, content=content, created_by_id=created_by_id, status="uploaded",
                    total_rows=total, options={"headers": headers, "mapping": suggest_mapping(s, kind, headers),
                                               "dedupe_by": next(iter(DEDUPE_CHOICES[kind])),
                                               "skip_failing": False})
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, job_id: uuid.UUID, with_content: bool = True) -> ImportJob:
    """The bound tenant's import job (``with_content=False``: without loading the file);
    raises NotFound (also for another tenant's id)."""
    options = [] if with_content else [defer(ImportJob.content)]
    job = s.get(ImportJob, (bound_tenant_id(s), job_id), options=options)
    if job is None:
        raise NotFound("import job")
    return job


def recent_jobs(s: Session, limit: int = 20) -> list[ImportJob]:
    """The latest jobs, without their file contents."""
    return list(s.scalars(select(ImportJob).options(load_only(
        ImportJob.kind, ImportJob.filename, ImportJob.status, ImportJob.total_rows, ImportJob.created_rows,
        ImportJob.updated_rows, ImportJob.skipped_rows, ImportJob.created_at, ImportJob.finished_at))
        .order_by(ImportJob.created_at.desc(), ImportJob.id.desc()).limit(limit)))


def set_mapping(s: Session, job: ImportJob, mapping: dict[str, str]) -> None:
    """Keep the user's column choices on the job; raises ValidationFailed (per field) for
    a required field without a column or a column the file does not have."""
    if job.status not in ("uploaded", "failed"):
        raise ValidationFailed.one("", _l("This import has already run."))
    headers = job.options.get("headers", [])
    fields = FIELDS[job.kind]
    errors: dict[str, list] = {}
    clean = {}
    for name, spec in fields.items():
        header = (mapping.get(name) or "").strip()
        if header and header not in headers:
            errors.setdefault(name, []).append(_l("Choose one of the listed values."))
        elif spec.required and not header:
            errors.setdefault(name, []).append(_l("This field is required."))
        elif header:
            clean[name] = header
    if errors:
        raise ValidationFailed(errors)
    job.options = {**job.options, "mapping": clean}
    s.flush()


@dataclass
class PreviewRow:
    row: int
    values: dict[str, object]
    errors: list[RowError]


@dataclass
class Preview:
    fields: list[ImportField]
    mapping: dict[str, str]
    rows: list[PreviewRow]
    result: ImportResult
    file_errors: list[RowError]     # row 0 and 1: the file and the mapping


def preview(s: Session, job: ImportJob, dedupe_by: str, as_of: dt.date | None) -> Preview:
    """The first PREVIEW_ROWS data rows with their errors, and a dry run over the whole
    file (its counts and every error)."""
    mapping = job.options.get("mapping", {})
    result = import_file(s, job.kind, job.filename, job.content, mapping, dedupe_by=dedupe_by, as_of=as_of,
                         dry_run=True)
    fields = [f for n, f in FIELDS[job.kind].items() if mapping.get(n)]
    rows: list[PreviewRow] = []
    try:
        headers, data = read_table(job.filename, job.content)
    except ValidationFailed:
        headers, data = [], iter(())
    reader = _RowReader(headers, mapping)
    by_row: dict[int, list[RowError]] = {}
    for e in result.errors:
        by_row.setdefault(e.row, []).append(e)
    for i, row in enumerate(data):
        if len(rows) >= PREVIEW_ROWS:
            break
        if _blank(row):
            continue
        rows.append(PreviewRow(i + 2, {f.name: _cell_text(reader.cell(row, f.name)) for f in fields},
                               by_row.get(i + 2, [])))
    return Preview(fields=fields, mapping=mapping, rows=rows, result=result,
                   file_errors=[e for e in result.errors if e.row <= 1])


def start_job(s: Session, job: ImportJob, dedupe_by: str, skip_failing: bool) -> bool:
    """Mark the job running with these options and remember its mapping for the tenant;
    False when it is running or done already (a second click). The caller commits, then
    runs ``run_job``."""
    if dedupe_by not in DEDUPE_CHOICES[job.kind]:
        raise ValidationFailed.one("dedupe_by", _l("Choose one of the listed values."))
    n = s.execute(update(ImportJob).where(ImportJob.id == job.id, ImportJob.status.in_(("uploaded", "failed")))
                  .values(status="running", processed_rows=0, created_rows=0, updated_rows=0, skipped_rows=0,
                          errors=[], finished_at=None,
                          options={**job.options, "dedupe_by": dedupe_by, "skip_failing": bool(skip_failing)})
                  .execution_options(synchronize_session="fetch")).rowcount
    if n != 1:
        return False
    remember_mapping(s, job.kind, job.options.get("mapping", {}))
    with _progress_lock:
        _progress[job.id] = (0, job.total_rows)
    return True


def job_progress(job: ImportJob) -> tuple[int, int]:
    """(rows done, rows in all) of a job: live figures while it runs in this process."""
    if job.status == "running":
        with _progress_lock:
            live = _progress.get(job.id)
        if live is not None:
            return live
    return job.processed_rows or 0, job.total_rows or 0


def job_errors(job: ImportJob) -> list[RowError]:
    return [RowError.from_dict(e) for e in job.errors or []]


def run_job(database, tenant_id: uuid.UUID, job_id: uuid.UUID, as_of: dt.date | None = None) -> None:
    """Run a job that ``start_job`` marked running, in its own session and ONE transaction:
    all of the file's rows or (on an error of any kind) none of them. Meant as the target
    of a background thread; never raises. A crash marks the job failed in a separate
    transaction."""
    s = database.new_session()
    bind_tenant(s, tenant_id)
    is_pg = database.engine.dialect.name == "postgresql"
    last_write = [0.0]

    def progress(done: int, total: int) -> None:
        with _progress_lock:
            _progress[job_id] = (done, total)
        if is_pg and time.monotonic() - last_write[0] > 0.5:
            last_write[0] = time.monotonic()
            _write_progress(database, tenant_id, job_id, done)

    try:
        job = s.get(ImportJob, (tenant_id, job_id))
        if job is None or job.status != "running":
            s.rollback()
            return
        opts = job.options or {}
        result = import_file(s, job.kind, job.filename, job.content, opts.get("mapping", {}),
                             dedupe_by=opts.get("dedupe_by", "external_ref"),
                             skip_failing=bool(opts.get("skip_failing")), created_by_id=job.created_by_id,
                             progress=progress, as_of=as_of)
        refused = bool(result.errors) and not result.written and not (opts.get("skip_failing") and not
                                                                       any(e.row <= 1 for e in result.errors))
        job.status = "failed" if refused else "done"
        job.processed_rows = result.total
        job.total_rows = result.total
        job.created_rows = result.created
        job.updated_rows = result.updated
        job.skipped_rows = result.skipped
        job.errors = [e.as_dict() for e in result.errors[:MAX_STORED_ERRORS]]
        job.options = {**opts, "unchanged": result.unchanged, "customers_created": result.customers_created}
        job.finished_at = now_utc()
        s.commit()
    except Exception as exc:  # noqa: BLE001 - whatever happened, nothing is half-written
        s.rollback()
        log.exception("import job %s of tenant %s failed", job_id, tenant_id)
        _mark_failed(database, tenant_id, job_id, exc)
    finally:
        s.close()
        with _progress_lock:
            _progress.pop(job_id, None)


def _write_progress(database, tenant_id, job_id, done: int) -> None:
    s = database.new_session()
    try:
        bind_tenant(s, tenant_id)
        s.execute(update(ImportJob).where(ImportJob.id == job_id).values(processed_rows=done)
                  .execution_options(synchronize_session=False))
        s.commit()
    except Exception:  # noqa: BLE001 - progress is a nicety; the import goes on
        s.rollback()
        log.warning("could not record the progress of import job %s", job_id, exc_info=True)
    finally:
        s.close()


# An import takes seconds to minutes; one still "running" a day later lost its process
# (a worker restart ends the daemon thread) and must be startable again.
STALE_AFTER = dt.timedelta(days=1)


@jobs.job("fail-stale-imports")
def fail_stale_imports(s: Session, as_of: dt.date) -> str | None:
    """Mark the bound tenant's imports that started more than a day before ``as_of`` and
    are still running as failed (nothing of them was written: an import is one
    transaction), so they can be run again. Idempotent."""
    cutoff = dt.datetime.combine(as_of, dt.time.min, tzinfo=dt.timezone.utc) - STALE_AFTER
    stale = list(s.scalars(select(ImportJob).where(ImportJob.status == "running", ImportJob.created_at < cutoff)))
    for job_row in stale:
        job_row.status = "failed"
        job_row.finished_at = now_utc()
        job_row.errors = [RowError(0, "", _l("The import was interrupted (the server restarted); nothing was "
                                             "imported. Run it again.")).as_dict()]
        job_row.options = {**(job_row.options or {}), "failure": "interrupted"}
    s.flush()
    return f"{len(stale)} interrupted imports marked failed" if stale else None


def _mark_failed(database, tenant_id, job_id, exc: Exception) -> None:
    s = database.new_session()
    try:
        bind_tenant(s, tenant_id)
        job = s.get(ImportJob, (tenant_id, job_id))
        if job is not None:
            job.status = "failed"
            job.finished_at = now_utc()
            job.processed_rows = 0
            job.created_rows = job.updated_rows = job.skipped_rows = 0
            job.errors = [RowError(0, "", _l("The import stopped because of an unexpected error; nothing was "
                                             "imported. Try again, or ask for help if it happens again.")).as_dict()]
            job.options = {**(job.options or {}), "failure": f"{type(exc).__name__}: {exc}"[:500]}
            s.commit()
    except Exception:  # noqa: BLE001
        s.rollback()
        log.exception("could not mark import job %s failed", job_id)
    finally:
        s.close()


# --- export -----------------------------------------------------------------------------

CUSTOMER_EXPORT_COLUMNS = ("ref", "name", "address_as", "phone", "email", "card_number", "classification",
                           "location", "birthday", "company", "plate_number", "notes", "created_at")
TRANSACTION_EXPORT_COLUMNS = ("customer_ref", "customer_name", "occurred_on", "amount", "quantity", "kind",
                              "location", "department", "external_id", "note")


def safe_cell(value):
    """A value for a CSV or XLSX cell that no spreadsheet runs as a formula: text starting
    with = + - @ (or a tab or carriage return) gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str):
        if value.startswith(FORMULA_START):
            return "'" + value
        return value
    return value


def _code_maps(s: Session):
    return ({e.id: e.code for e in s.scalars(select(Location))},
            {e.id: e.code for e in s.scalars(select(Department))},
            {e.id: e.code for e in s.scalars(select(TransactionKind))})


EXPORT_CHUNK = 2000


def _customer_query(q: str):
    stmt = select(Customer).where(Customer.merged_into_id.is_(None))
    q = (q or "").replace("\x00", "").strip()[:100]
    if q:
        conditions = [func.lower(Customer.name).startswith(q.lower(), autoescape=True),
                      Customer.card_number == q, Customer.external_ref == q, func.lower(Customer.email) == q.lower()]
        digits = re.sub(r"[\s\-().]", "", q)
        if re.fullmatch(r"\+?[0-9]+", digits):
            conditions.append(Customer.phone.contains(digits.lstrip("+").lstrip("0") or digits, autoescape=True))
        stmt = stmt.where(or_(*conditions))
    return stmt


def _in_chunks(s: Session, stmt, first, second, row_key):
    """Run ``stmt`` ordered by (first, second) in chunks of EXPORT_CHUNK (keyset paging),
    each chunk in a transaction of its own that ends before its rows are handed out: a
    slow or abandoned download holds no database locks. Yields result rows."""
    last = None
    while True:
        page = stmt
        if last is not None:
            page = page.where(or_(first > last[0], and_(first == last[0], second > last[1])))
        rows = list(s.execute(page.order_by(first, second).limit(EXPORT_CHUNK)))
        s.commit()
        if not rows:
            return
        yield from rows
        if len(rows) < EXPORT_CHUNK:
            return
        last = row_key(rows[-1])


def export_customers(s: Session, q: str = "") -> Iterator[list]:
    """The header, then one row per customer matching the customer list's search ``q``
    (not merged away), ordered by name. Values are Python values (dates as dates). Reads in
    chunks, each in its own transaction (see _in_chunks)."""
    locations, _d, _k = _code_maps(s)
    s.commit()
    yield list(CUSTOMER_EXPORT_COLUMNS)
    for (c,) in _in_chunks(s, _customer_query(q), Customer.name, Customer.id, lambda r: (r[0].name, r[0].id)):
        yield [c.external_ref or "", c.name, c.address_as, c.phone, c.email, c.card_number or "", c.classification,
               locations.get(c.location_id, ""), c.birthday, c.company, c.plate_number, c.notes,
               c.created_at.replace(microsecond=0, tzinfo=None) if c.created_at else None]


@dataclass
class TransactionFilters:
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    kind: str = ""
    location: str = ""
    q: str = ""


def parse_transaction_filters(s: Session, args) -> TransactionFilters:
    """Filters from query parameters ``from``, ``to`` (YYYY-MM-DD), ``kind`` and
    ``location`` (codes) and ``q`` (a customer reference); raises ValidationFailed."""
    errors: dict[str, list] = {}
    f = TransactionFilters()
    for key, attr in (("from", "date_from"), ("to", "date_to")):
        text = (args.get(key) or "").strip()
        if text:
            try:
                setattr(f, attr, dt.date.fromisoformat(text))
            except ValueError:
                errors[key] = [_l("Enter a date such as 2026-03-31.")]
    for key, model in (("kind", TransactionKind), ("location", Location)):
        code = (args.get(key) or "").strip()[:40]
        if code:
            if s.scalar(select(model.id).where(model.code == code)) is None:
                errors[key] = [_l("Choose one of the listed values.")]
            setattr(f, key, code)
    f.q = (args.get("q") or "").replace("\x00", "").strip()[:64]
    if errors:
        raise ValidationFailed(errors)
    return f


def export_transactions(s: Session, filters: TransactionFilters) -> Iterator[list]:
    """The header, then the bound tenant's transactions matching ``filters``, oldest
    first (read in chunks, see _in_chunks)."""
    locations, departments, kinds = _code_maps(s)
    codes = {v: k for k, v in kinds.items()}
    location_ids = {v: k for k, v in locations.items()}
    stmt = (select(Transaction.id, Transaction.occurred_on, Transaction.amount, Transaction.quantity, Transaction.kind_id,
                   Transaction.location_id, Transaction.department_id, Transaction.external_id, Transaction.note,
                   Customer.external_ref, Customer.name)
            .join(Customer, and_(Customer.tenant_id == Transaction.tenant_id, Customer.id == Transaction.customer_id)))
    if filters.date_from:
        stmt = stmt.where(Transaction.occurred_on >= filters.date_from)
    if filters.date_to:
        stmt = stmt.where(Transaction.occurred_on <= filters.date_to)
    if filters.kind:
        stmt = stmt.where(Transaction.kind_id == codes.get(filters.kind))
    if filters.location:
        stmt = stmt.where(Transaction.location_id == location_ids.get(filters.location))
    if filters.q:
        stmt = stmt.where(Customer.external_ref == filters.q)
    s.commit()
    yield list(TRANSACTION_EXPORT_COLUMNS)
    for r in _in_chunks(s, stmt, Transaction.occurred_on, Transaction.id, lambda r: (r.occurred_on, r.id)):
        yield [r.external_ref or "", r.name, r.occurred_on, Decimal(r.amount).quantize(Decimal("0.01")), r.quantity,
               kinds.get(r.kind_id, ""), locations.get(r.location_id, ""), departments.get(r.department_id, ""),
               r.external_id or "", r.note]


def _csv_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(safe_cell(value))


def csv_lines(rows: Iterable[list]) -> Iterator[str]:
    """CSV text (UTF-8 with a BOM so that Excel reads Chinese right), a chunk per 500 rows,
    every text cell escaped against formula injection."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    yield "\ufeff"
    for i, row in enumerate(rows, 1):
        writer.writerow([_csv_text(v) for v in row])
        if i % 500 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def xlsx_bytes(rows: Iterable[list], title: str = "Export") -> bytes:
    """An XLSX workbook of ``rows`` (the first is the header); text escaped against
    formula injection and stripped of characters XLSX cannot hold."""
    import openpyxl
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet(title=title[:31])
    for row in rows:
        out = []
        for v in row:
            if isinstance(v, str):
                v = safe_cell(ILLEGAL_CHARACTERS_RE.sub("", v))
            elif isinstance(v, Decimal):
                v = float(v) if len(v.as_tuple().digits) <= 15 else str(v)
            out.append(v)
        ws.append(out)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def errors_csv(errors: list[RowError], header: list[str]) -> str:
    """The job's errors as CSV text (row, column, message in the current language)."""
    return "".join(csv_lines([header] + [[e.row, e.column, str(e.message)] for e in errors]))

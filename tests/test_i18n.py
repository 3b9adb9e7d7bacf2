"""Every user-visible string is translated to Chinese, with its placeholders intact."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "saas/translations/zh/LC_MESSAGES/messages.po"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _extract(tmp_path) -> set[str]:
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg",
                    "-k", "_l", "-o", str(pot), "."], cwd=ROOT, check=True, capture_output=True)
    with pot.open("rb") as fh:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}


def test_every_message_has_a_chinese_translation(tmp_path):
    with PO.open("rb") as fh:
        catalog = read_po(fh)
    def key(m):
        return m.id if isinstance(m.id, str) else m.id[0]

    def done(m):
        return bool(m.string) if isinstance(m.string, str) else all(m.string)

    translated = {key(m) for m in catalog if m.id and done(m) and not m.fuzzy}
    missing = sorted(_extract(tmp_path) - translated)
    assert missing == [], f"{len(missing)} strings lack a zh_CN translation, e.g. {missing[:10]}"


def test_placeholders_survive_translation():
    with PO.open("rb") as fh:
        catalog = read_po(fh)
    for m in catalog:
        if not m.id:
            continue
        ids = [m.id] if isinstance(m.id, str) else list(m.id)
        strings = [m.string] if isinstance(m.string, str) else list(m.string)
        wanted = set().union(*(PLACEHOLDER.findall(i) for i in ids))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, m.id

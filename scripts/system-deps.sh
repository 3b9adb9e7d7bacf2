#!/usr/bin/env bash
# Install the Debian packages Huitou needs, only those missing.
#   scripts/system-deps.sh run   -> what the app needs (WeasyPrint: Pango, HarfBuzz subset, a CJK font)
#   scripts/system-deps.sh test  -> plus Chromium (browser tests), poppler-utils (PDF to PNG),
#                                   PostgreSQL server binaries (the test harness starts one)
#   scripts/system-deps.sh bench -> plus wrk (the award benchmark's load generator)
set -euo pipefail
mode="${1:-run}"
missing=()

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }

have_lib libpango-1.0.so || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
have_lib libharfbuzz-subset.so || missing+=(libharfbuzz-subset0)
fc-list 2>/dev/null | grep -qiE "WenQuanYi|Noto Sans CJK|Noto Serif CJK" || missing+=(fonts-wqy-microhei)

if [ "$mode" = "test" ] || [ "$mode" = "bench" ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v pdftoppm >/dev/null || missing+=(poppler-utils)
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
fi

if [ "$mode" = "bench" ]; then
  command -v wrk >/dev/null || missing+=(wrk)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null; then
  SUDO="sudo"
else
  echo "Please install these Debian/Ubuntu packages, then run the command again:" >&2
  echo "  apt-get install ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "No apt-get here. Install the equivalents of: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/bin/sh
# `systemd-analyze verify` of the shipped unit, failing on any finding: the
# tool exits 0 on unknown keys and bad values (it only prints them), and it
# refuses an ExecStart= binary that does not exist, so the unit is checked as
# a copy whose ExecStart= names an installed purplegw (by default the one on
# PATH).  Usage: sh scripts/verify-unit.sh [UNIT_FILE [PURPLEGW_EXECUTABLE]]
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
unit=${1:-$repo/etc/purplegw.service}
exe=${2:-$(command -v purplegw || true)}
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-unit: systemd-analyze missing (Debian package systemd; make test-deps)" >&2
    exit 1
fi
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "verify-unit: no installed purplegw executable to put in ExecStart=" >&2
    exit 1
fi
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")  # ExecStart= wants an absolute path
work=$(mktemp -d "${TMPDIR:-/tmp}/purplegw-unit.XXXXXX")
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/local/bin/purplegw |ExecStart=$exe |" "$unit" >"$work/purplegw.service"
grep -q "^ExecStart=$exe " "$work/purplegw.service" \
    || { echo "verify-unit: ExecStart= does not start /usr/local/bin/purplegw" >&2; exit 1; }
status=0
systemd-analyze verify "$work/purplegw.service" >"$work/out" 2>&1 || status=$?
if [ "$status" != 0 ] || [ -s "$work/out" ]; then
    sed "s|$work/purplegw.service|$unit|" "$work/out" >&2
    echo "verify-unit: $unit has findings (exit status $status)" >&2
    exit 1
fi
echo "systemd-analyze verify: $unit OK"

#!/bin/sh
# The package as operators get it: build the sdist, then the wheel from that
# sdist (python -m build), install the wheel in a fresh virtualenv outside the
# source tree, and check that the installed gateway validates its config,
# creates its store and answers SIP OPTIONS on loopback (smoke_installed.py).
# A file missing from MANIFEST.in or package_data fails here, not at an
# operator's site.  Usage: sh scripts/check-wheel.sh [WORK_DIR]
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-}
if [ -z "$work" ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/purplegw-wheel.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
case "$work" in
    "$repo"|"$repo"/*) echo "check-wheel: WORK_DIR must be outside the source tree" >&2; exit 2 ;;
esac

python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q build
# The wheel with the SIP core compiled by mypyc (setup.py, COMPILED), as a
# machine with a C compiler builds it; =1: a failed compile fails here.
PURPLEGW_COMPILE=1 "$work/tools/bin/python" -m build --outdir "$work/dist" "$repo" \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
ls "$work/dist"

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$work"/dist/purplegw-*.whl
cd "$work"
# The installed copy, not the source tree, is what runs below.
"$work/venv/bin/python" -c 'import purplegw, sys; sys.exit("/site-packages/" not in purplegw.__file__)'
# ... and its SIP core is the compiled one; the sdist carries no built file.
"$work/venv/bin/python" -c 'import purplegw.sip.parser as p, sys; sys.exit(not p.__file__.endswith(".so"))'
if tar -tzf "$work"/dist/purplegw-*.tar.gz | grep -E '\.(so|c)$'; then
    echo "check-wheel: the sdist carries built files" >&2
    exit 1
fi
"$work/venv/bin/python" "$repo/scripts/smoke_installed.py" "$work/venv/bin/purplegw" "$work"
# The shipped systemd unit, starting the purplegw this wheel installed.
sh "$repo/scripts/verify-unit.sh" "$repo/etc/purplegw.service" "$work/venv/bin/purplegw"

# Where compiling fails (here a compiler that always fails), auto mode builds a
# pure-Python wheel, and tags it so (py3-none-any), not for this platform alone.
CC=false PURPLEGW_COMPILE=auto "$work/tools/bin/python" -m build --wheel --outdir "$work/pure" \
    "$repo" >"$work/build-pure.log" 2>&1 || { tail -n 40 "$work/build-pure.log" >&2; exit 1; }
ls "$work/pure"
"$work/tools/bin/python" - "$work"/pure/purplegw-*.whl <<'PY'
import sys
import zipfile

wheel = sys.argv[1]
built = [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith((".so", ".c"))]
if not wheel.endswith("-py3-none-any.whl") or built:
    sys.exit(f"check-wheel: a failed compile should give a pure wheel: {wheel} {built}")
PY

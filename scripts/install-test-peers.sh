#!/bin/sh
# Installs the real servers the test suite talks to (Debian packages), and the
# tools of the packaging checks (systemd-analyze), only
# those whose binaries are missing, so a second `make test` costs nothing.
# The suite starts its own instances on loopback, free ports, temp dirs: the
# packages' own system services are not used and are stopped if apt started them.
set -eu

need=""
check() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ] || need="$need $3"; }
check prosody /usr/bin/prosody prosody
check mariadbd /usr/sbin/mariadbd "mariadb-server mariadb-client"
check ngircd /usr/sbin/ngircd ngircd
check tinyproxy /usr/bin/tinyproxy tinyproxy
check kamailio /usr/sbin/kamailio "kamailio kamailio-presence-modules kamailio-xmpp-modules"
ls /usr/lib/*/kamailio/modules/db_mysql.so >/dev/null 2>&1 || need="$need kamailio-mysql-modules"
check sipp /usr/bin/sipp sip-tester
check sipsak /usr/bin/sipsak sipsak
check openssl /usr/bin/openssl openssl
# systemd-analyze verify of etc/purplegw.service (scripts/verify-unit.sh)
check systemd-analyze /usr/bin/systemd-analyze systemd
check prometheus /usr/bin/prometheus prometheus
# The test virtualenv compiles the SIP core with mypyc (setup.py, COMPILED):
# a C compiler and the headers of the python3 that builds it.
check cc /usr/bin/cc gcc
python3 -c 'import pathlib, sys, sysconfig; sys.exit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").is_file())' \
    || need="$need python3-dev"

# Synapse (Matrix homeserver) comes from PyPI with many pinned dependencies of
# its own: its own virtualenv, never the project's (tests/kit/synapse.py uses it).
# The version the suite was written against (config keys, admin API).
synapse_venv="$(dirname "$0")/../.venv-synapse"
if [ ! -x "$synapse_venv/bin/synapse_homeserver" ]; then
    python3 -m venv "$synapse_venv"
    "$synapse_venv/bin/pip" install -q 'matrix-synapse~=1.163.0' >/dev/null
fi

if [ -z "$need" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing test peers:$need; install them with: sudo apt-get install$need" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
# Package scripts may start system instances; the suite runs its own.
for svc in prosody mariadb ngircd tinyproxy kamailio prometheus; do
    (service "$svc" stop || true) >/dev/null 2>&1
done

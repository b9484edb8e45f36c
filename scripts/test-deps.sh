#!/bin/sh
# Installs the Debian packages the tests need, only those missing.
# openssl: S/MIME interop peer; slapd, ldap-utils: LDAP discovery peer;
# bind9-dnsutils: dig, a second DNS client; python3: SMTP/IMAP clients; curl;
# unzip, zip: Info-ZIP checks and writes IHE XDM packages; gpgsm, gpg-agent:
# GnuPG's S/MIME, a second interop peer (gpgsm alone does not pull in the
# agent that holds its keys); chromium, chromium-driver: the admin page's
# test in a real (headless) browser; postgresql: a PostgreSQL server that
# internal/pgtest starts for the store's tests on PostgreSQL (Debian keeps
# initdb and postgres in /usr/lib/postgresql/N/bin, off PATH). Also
# staticcheck (a Go tool, not a Debian package) for `make lint`.
set -e

# staticcheck for `make lint`, pinned, built into .tools/ (ignored by git).
STATICCHECK_VERSION=v0.8.2
tools="$(cd "$(dirname "$0")/.." && pwd)/.tools"
# `staticcheck -version` prints "staticcheck 2026.2.2 (0.8.2)".
if ! "$tools/staticcheck" -version 2>/dev/null | grep -qF "(${STATICCHECK_VERSION#v})"; then
	echo "installing staticcheck $STATICCHECK_VERSION into .tools/"
	GOBIN="$tools" "${GO:-go}" install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have openssl || need="$need openssl"
have slapd || need="$need slapd"
have ldapadd || need="$need ldap-utils"
have dig || need="$need bind9-dnsutils"
have python3 || need="$need python3"
have curl || need="$need curl"
have unzip || need="$need unzip"
have zip || need="$need zip"
have gpgsm || need="$need gpgsm"
have gpg-agent || need="$need gpg-agent"
have chromium || need="$need chromium"
have chromedriver || need="$need chromium-driver"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
[ -z "$need" ] && exit 0
echo "installing:$need"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends $need >/dev/null

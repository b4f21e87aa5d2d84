#!/usr/bin/env bash
# test-deps.sh installs the external servers the engine tests start themselves
# (today: redis-server for engine/adapter/redis). NATS needs nothing here: the
# JetStream tests embed github.com/nats-io/nats-server/v2 from the module cache.
#
# Safe to run repeatedly: it only touches apt when a binary is missing.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)

if ((${#need[@]} == 0)); then
	echo "test-deps: all present (redis-server: $(command -v redis-server))"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	SUDO=sudo
else
	SUDO=
fi

echo "test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"

# The Debian package starts a system redis on :6379 via its init scripts on
# some images; tests use their own instance on a free port, so that one is
# harmless, but stop it when we just started it to keep the machine quiet.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
	$SUDO systemctl stop redis-server || true
fi

command -v redis-server >/dev/null
echo "test-deps: redis-server $(redis-server --version | awk '{print $3}')"

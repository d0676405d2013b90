#!/usr/bin/env bash
# Installs, from Debian's packages, the programs drover drives and its tests
# start: nginx, git, redis-server, haproxy, PostgreSQL, systemd-container,
# iproute2, socat, curl, openssl, pgbouncer, lintian, Node.js, gnupg, ssh-keygen. Does nothing when all are
# present. Needs root (or
# sudo) only when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have nginx || need+=(nginx)
have git || need+=(git)
have redis-server || need+=(redis-server)
have haproxy || need+=(haproxy)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have systemd-nspawn || need+=(systemd-container)
have ip || need+=(iproute2)
have socat || need+=(socat)
have curl || need+=(curl)
have openssl || need+=(openssl)
have rsync || need+=(rsync)      # the reference in the release-store benchmark
have pgbouncer || need+=(pgbouncer)  # the migration and doctor tests refuse transaction pooling through it
have lintian || need+=(lintian)      # the release test checks the .deb packages with it
# The signature tests sign commits with real OpenPGP and SSH keys.
have gpg || need+=(gnupg)
have gpg-agent || need+=(gpg-agent)
have ssh-keygen || need+=(openssh-client)
# The example platform's workers and the tests' workers are Node.js programs.
have node || need+=(nodejs)
# units' tests hold the rendered worker units to `systemd-analyze security`.
have systemd-analyze || need+=(systemd)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Packages must not start their services: drover and its tests start what
# they need themselves.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "setup: done" >&2

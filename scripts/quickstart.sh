#!/usr/bin/env bash
# make quickstart: run drover's agent on the shipped example, on this machine.
# It builds bin/drover, makes .quickstart/repo (a git repository holding
# examples/config) unless it exists, and runs the agent in the foreground
# with examples/node.local.yaml: nginx on 127.0.0.1:8443 (sites and routes)
# and 127.0.0.1:8080 (the LB health endpoint), workers as child processes.
set -euo pipefail
cd "$(dirname "$0")/.."
Q=.quickstart
bash scripts/setup.sh
make --no-print-directory build >/dev/null

if [ ! -d "$Q/repo/.git" ]; then
  mkdir -p "$Q"
  git init -q -b main "$Q/repo"
  cp -R examples/config/. "$Q/repo/"
  git -C "$Q/repo" add -A
  git -C "$Q/repo" -c user.name=quickstart -c user.email=quickstart@localhost commit -qm "The example platform"
fi
bin/drover validate "$Q/repo"

# A throwaway PostgreSQL for the example's migrations, on a unix socket in
# .quickstart/pg (as the postgres user when run as root).
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(pwd)/$Q/pg
PGPORT=54329
as_pg() { if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi; }
if [ ! -d "$PGDIR/data" ]; then
  mkdir -p "$PGDIR"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDIR"
  as_pg "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync >"$Q/initdb.log" 2>&1 ||
    { cat "$Q/initdb.log" >&2; exit 1; }
fi
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w \
  -o "-c listen_addresses='' -c unix_socket_directories='$PGDIR' -c port=$PGPORT" start >/dev/null
(umask 077; echo "postgresql://postgres@/postgres?host=$PGDIR&port=$PGPORT" > "$Q/db.dsn")  # drover refuses a secret others can read
chmod 600 "$Q/db.dsn"

agent=""
stop() {
  # The agent stops its workers; nginx, which it started, is ours to stop.
  if [ -n "$agent" ]; then kill -TERM "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
  if [ -s "$Q/nginx/nginx.pid" ]; then
    kill -QUIT "$(cat "$Q/nginx/nginx.pid")" 2>/dev/null || true
  fi
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null 2>&1 || true
}
trap stop EXIT
trap 'exit 130' INT TERM

cat <<MSG

drover is putting the example live. In another terminal:

  curl -k --resolve blog.example.com:8443:127.0.0.1 https://blog.example.com:8443/
  curl -k --resolve api.example.com:8443:127.0.0.1 https://api.example.com:8443/version
  curl http://127.0.0.1:8080/healthz
  bin/drover status --config examples/node.local.yaml
  bin/drover migrate status --config examples/node.local.yaml

Change the example and watch it roll (the agent polls every 2 s):

  sed -i 's/The blog/The new blog/' $Q/repo/sites/blog/index.html
  git -C $Q/repo commit -qam "Rename the blog"

Ctrl-C stops the agent, its workers and nginx.

MSG
bin/drover agent --config examples/node.local.yaml &
agent=$!
wait "$agent"

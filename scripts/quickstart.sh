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

agent=""
stop() {
  # The agent stops its workers; nginx, which it started, is ours to stop.
  if [ -n "$agent" ]; then kill -TERM "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
  if [ -s "$Q/nginx/nginx.pid" ]; then
    kill -QUIT "$(cat "$Q/nginx/nginx.pid")" 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

cat <<MSG

drover is putting the example live. In another terminal:

  curl -k --resolve blog.example.com:8443:127.0.0.1 https://blog.example.com:8443/
  curl -k --resolve api.example.com:8443:127.0.0.1 https://api.example.com:8443/version
  curl http://127.0.0.1:8080/healthz
  bin/drover status --config examples/node.local.yaml

Change the example and watch it roll (the agent polls every 2 s):

  sed -i 's/The blog/The new blog/' $Q/repo/sites/blog/index.html
  git -C $Q/repo commit -qam "Rename the blog"

Ctrl-C stops the agent, its workers and nginx.

MSG
bin/drover agent --config examples/node.local.yaml &
agent=$!
wait "$agent"

#!/usr/bin/python3
# Test worker for the units package: serves /healthz, and on any other path
# reports what it runs as JSON (release version, cwd, argv, environment, pid).
# A file CRASH in its directory makes it exit at start; a file UNHEALTHY makes
# /healthz answer 503.
import http.server
import json
import os
import sys

if os.path.exists("CRASH"):
    sys.stderr.write("crashing on purpose: CRASH file present\n")
    sys.stderr.flush()
    sys.exit(3)

port = int(os.environ["PORT"])
with open("VERSION") as f:
    version = f.read().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200
        if self.path == "/healthz":
            body = b"ok"
            if os.path.exists("UNHEALTHY"):
                status, body = 503, b"unhealthy on purpose"
        else:
            body = json.dumps({
                "version": version,
                "cwd": os.getcwd(),
                # Under systemd the bundle is bound into the sandbox at the
                # live path, so the directory is told by its identity.
                "cwdID": "%d:%d" % (os.stat(".").st_dev, os.stat(".").st_ino),
                "argv": sys.argv[1:],
                "env": dict(os.environ),
                "pid": os.getpid(),
                "port": port,
            }).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


print("serving version", version, "on port", port, flush=True)
Server(("127.0.0.1", port), Handler).serve_forever()

package main

import (
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// workerJS is the Node.js worker the tests' config repos run: it answers
// its release's version.txt, /healthz, and exits at once when the version
// says "crash" (a release that never gets healthy).
const workerJS = `"use strict";
const http = require("node:http");
const fs = require("node:fs");
const version = fs.readFileSync("version.txt", "utf8").trim();
if (version.startsWith("crash")) { console.error("boom: bad release"); process.exit(3); }
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") { res.writeHead(200); return res.end("ok\n"); }
  res.writeHead(200, {"Content-Type": "text/plain"});
  res.end(version + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
server.listen(Number(process.env.PORT), "127.0.0.1");
`

// gitHTTP serves the repositories under a directory with the real
// git-http-backend and counts ref advertisements (polls) and fetches.
type gitHTTP struct {
	*httptest.Server
	polls, fetches atomic.Int64
}

func serveGit(t testing.TB, root string) *gitHTTP {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	s := &gitHTTP{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == "GET" && strings.HasSuffix(req.URL.Path, "/info/refs"):
			s.polls.Add(1)
		case req.Method == "POST" && strings.HasSuffix(req.URL.Path, "/git-upload-pack"):
			s.fetches.Add(1)
		}
		backend.ServeHTTP(w, req)
	}))
	t.Cleanup(s.Close)
	return s
}

//go:build e2e

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
)

const overlapSpecSystemd = `version: 1
rollout: {soak: 1s, healthTimeout: 30s, drainTimeout: 5s, handover: overlap}
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    instances: 2
    port: 3000
    health: {path: /healthz, interval: 100ms, successes: 2}
    routes: [{serverName: api.test, path: /}]
`

const overlapWorker = `"use strict";
const fs = require("node:fs");
const version = fs.readFileSync("version.txt", "utf8").trim();
if (version.startsWith("crash")) { console.error("boom"); process.exit(3); }
const server = require("node:http").createServer((q, s) => s.end(q.url === "/healthz" ? "ok\n" : version + "\n"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
server.listen(Number(process.env.PORT), "127.0.0.1");
`

// TestAgentUnderSystemdOverlap: the shipped drover.service on a real
// systemd node with rollout.handover: overlap. B's instances run as
// drover-api@3002/3003 from B's release directory, in the worker sandbox,
// while A's on 3000/3001 serve; nginx follows; A's stop afterwards. A
// release that crashes at start is halted without a drain, B serving on.
func TestAgentUnderSystemdOverlap(t *testing.T) {
	node := systemdtest.Boot(t, systemdtest.Options{Name: "overlap", PrivateNetwork: true})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	a := agentNode(t, node, "overlap", map[string]string{"drover.yaml": overlapSpecSystemd,
		"workers/api/server.js": overlapWorker, "workers/api/version.txt": "A\n"})
	node.WriteFile(t, "/etc/nginx/nginx.conf", []byte("pid /run/nginx.pid;\nevents {}\nhttp {}\n"), 0o644)
	node.WriteFile(t, "/etc/systemd/system/drover.service.d/test.conf", []byte("[Service]\nTimeoutStartSec=60s\n"), 0o644)
	if err := node.DaemonReload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.StartUnit(ctx, "nginx.service"); err != nil {
		t.Fatalf("%v\n%s", err, node.Journal("nginx.service", 20))
	}
	defer func() {
		if t.Failed() {
			t.Logf("journal of drover.service:\n%s", node.Journal("drover.service", 120))
		}
	}()
	if err := node.StartUnit(ctx, "drover.service"); err != nil {
		t.Fatal(err)
	}
	status := func() string {
		out, _ := node.Systemctl(ctx, "show", "-p", "StatusText", "--value", "drover.service")
		return out
	}
	waitStatus := func(what string, ok func(string) bool) {
		t.Helper()
		for began := time.Now(); !ok(status()); time.Sleep(200 * time.Millisecond) {
			if time.Since(began) > 2*time.Minute {
				t.Fatalf("waiting for %s: StatusText %q", what, status())
			}
		}
	}
	waitStatus("A live", func(s string) bool { return strings.HasPrefix(s, "idle on "+a[:12]) })
	curl := func(args ...string) string {
		out, err := node.Run(ctx, append([]string{"curl", "-s", "--max-time", "5"}, args...)...)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(out)
	}
	answers := func() []string {
		var got []string
		for _, p := range []string{"3000", "3001", "3002", "3003"} {
			got = append(got, curl("http://127.0.0.1:"+p+"/v"))
		}
		return got
	}
	mustAnswer := func(when string, want ...string) {
		t.Helper()
		for began := time.Now(); ; time.Sleep(200 * time.Millisecond) {
			got := answers()
			if strings.Join(got, "|") == strings.Join(want, "|") {
				return
			}
			if time.Since(began) > 20*time.Second {
				t.Fatalf("%s: ports 3000-3003 answer %q, want %q", when, got, want)
			}
		}
	}
	mustAnswer("A live (first deploy: restart)", "A", "A", "", "")

	// Commit to the node's bare repo from a clone on the host.
	work := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.com"}, args...)...)
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("clone", "-q", node.Path("/srv/config.git"), ".")
	push := func(version string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(work, "workers/api/version.txt"), []byte(version+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		git("commit", "-qam", "api "+version)
		git("push", "-q", "origin", "HEAD:main")
		return git("rev-parse", "HEAD")
	}

	b := push("B")
	waitStatus("B live", func(s string) bool { return strings.HasPrefix(s, "idle on "+b[:12]) })
	mustAnswer("after the overlap to B", "", "", "B", "B")
	if got := curl("--resolve", "api.test:8443:127.0.0.1", "http://api.test:8443/v"); got != "B" { // no nginx.tls: plain HTTP
		t.Errorf("through nginx: %q, want B", got)
	}
	tmpl, _ := node.Run(ctx, "cat", "/etc/systemd/system/drover-api@.service")
	if want := "WorkingDirectory=/var/lib/drover/releases/" + b + "/workers/api"; !strings.Contains(tmpl, want) {
		t.Errorf("the template unit lacks %s:\n%s", want, tmpl)
	}
	if !strings.Contains(tmpl, `TemporaryFileSystem="/var/lib/drover":ro`) {
		t.Errorf("the template unit does not hide the state dir:\n%s", tmpl)
	}
	journal := node.Journal("drover.service", 200)
	for _, want := range []string{"step=starting rev=" + b[:12], "overlap memory", "workers settled on the live release"} {
		if !strings.Contains(journal, want) {
			t.Errorf("the agent's journal lacks %q", want)
		}
	}
	if i, j := strings.Index(journal, "step=starting rev="+b[:12]), strings.Index(journal, "step=draining rev="+b[:12]); j < i {
		t.Errorf("draining (%d) before starting (%d)", j, i)
	}

	c := push("crash C")
	halted := func() bool {
		for _, l := range strings.Split(node.Journal("drover.service", 300), "\n") {
			if strings.Contains(l, "revision failed; halting it") && strings.Contains(l, "rev="+c[:12]) {
				return true
			}
		}
		return false
	}
	for began := time.Now(); !halted(); time.Sleep(200 * time.Millisecond) {
		if time.Since(began) > 2*time.Minute {
			t.Fatal("C was not halted")
		}
	}
	if strings.Contains(node.Journal("drover.service", 300), "step=draining rev="+c[:12]) {
		t.Error("the node drained for C, whose workers never got healthy")
	}
	mustAnswer("after C's halt", "", "", "B", "B")
}

//go:build e2e

// Issue 15's lab scenario: a new server gets drover from the .deb, as on real
// servers, and the package upgraded in place never interrupts a turn.
package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/e2e/lab"
)

// l. Bare node n5 (nginx, no drover) installs the amd64 .deb that `make
// release` builds, writes node.yaml with `drover init`, passes `drover
// doctor`, enables the unit, and joins the cluster serving the live
// revision. Then, while n5 takes its turn of a rollout under load, the same
// package is installed over itself: the upgrade waits for the turn to end
// and only then restarts the agent; nothing is interrupted or lost.
func scenarioPackageInstall(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	n5 := l.Node("n5")
	deb := buildDeb(t, l)
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := n5.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n5.Sys().WriteFile("/root/drover.deb", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n5.Run(ctx, "sh", "-c", "command -v drover || echo none"); strings.TrimSpace(out) != "none" || err != nil {
		t.Fatalf("the bare node already has drover: %q %v", out, err)
	}
	t.Logf("dpkg -i: %s", lastLines(nodeRun(t, n5, "sh", "-c", "dpkg -i /root/drover.deb 2>&1"), 3))
	if out, _ := n5.Run(ctx, "systemctl", "is-enabled", "drover"); strings.TrimSpace(out) != "disabled" {
		t.Errorf("drover.service after install: %q, want disabled until configured", strings.TrimSpace(out))
	}
	// The example platform's certificate, as an operator puts it there.
	nodeRun(t, n5, "sh", "-c", "mkdir -p /etc/ssl/drover && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=example.com "+
		"-addext subjectAltName=DNS:example.com,DNS:*.example.com -keyout /etc/ssl/drover/privkey.pem -out /etc/ssl/drover/fullchain.pem 2>/dev/null && chmod 0600 /etc/ssl/drover/privkey.pem")
	t.Logf("drover init: %s", strings.TrimSpace(nodeRun(t, n5, "sh", "-c", n5.InitCommand())))
	doctor, err := n5.Run(ctx, "drover", "doctor")
	t.Logf("drover doctor:\n%s", doctor)
	if err != nil {
		t.Fatalf("drover doctor failed on the new node: %v", err)
	}
	rev := l.Nodes()[0].Live()
	w := watchLB(l)
	w.probe(n5)
	nodeRun(t, n5, "systemctl", "enable", "--now", "drover")
	waitFor(t, 3*time.Minute, "n5 live and in the load balancer", func() bool {
		return n5.Live() == rev && w.stateNow().up("n5")
	})
	for _, p := range w.stop().probes {
		if !p.healthy {
			t.Errorf("n5 was in the load balancer at %s while unhealthy: %s", p.at.Format(time.TimeOnly), p.answer)
		}
	}

	// The upgrade in place during n5's own turn.
	load, w, rev := pushUnderLoad(t, l, "9")
	waitFor(t, 3*time.Minute, "n5 in its turn", func() bool {
		st, err := l.Status(ctx)
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.Node == "n5" && (n.Step == "draining" || n.Step == "switching" || n.Step == "verifying") {
				return true
			}
		}
		return false
	})
	before := mainPID(t, n5)
	upgraded := make(chan string, 1)
	go func() {
		out, err := n5.Run(context.Background(), "sh", "-c", "dpkg -i /root/drover.deb 2>&1")
		if err != nil {
			out += "\nexit: " + err.Error()
		}
		upgraded <- out
	}()
	t.Logf("upgrading the package on n5 while it is in its turn (agent pid %s)", before)
	waitConverged(t, l, rev, 4*time.Minute)
	var out string
	select {
	case out = <-upgraded:
	case <-time.After(2 * time.Minute):
		t.Fatal("the package upgrade did not finish after the rollout")
	}
	// n5's node.yaml is drover init's, without nginx.revisionHeader: its
	// answers name no revision, so only the others' are checked by it.
	res := load.Stop()
	checkAnswers(t, l, res)
	t.Logf("%d answers named no revision (n5's)", res.Unnamed)
	lb := w.stop()
	t.Logf("upgrade: %s; load: %s; LB: %s", lastLines(out, 4), res, lb)
	if strings.Contains(out, "exit:") {
		t.Errorf("dpkg -i failed: %s", out)
	}
	if after := mainPID(t, n5); after == before {
		t.Errorf("the agent was not restarted by the upgrade (pid %s)", after)
	}
	if j := n5.Journal("drover.service", 400); strings.Contains(j, "stopped mid-change") {
		t.Errorf("the upgrade interrupted n5's turn:\n%s", lastLines(j, 30))
	}
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	if lb.maxOut > 1 {
		t.Errorf("%d nodes out at once: %s", lb.maxOut, lb)
	}
}

// buildDeb runs the release script for amd64 into a temporary directory.
func buildDeb(t testing.TB, l *lab.Lab) string {
	t.Helper()
	dist := t.TempDir()
	cmd := exec.Command("bash", "scripts/release.sh")
	cmd.Dir = l.Config().Source
	cmd.Env = append(os.Environ(), "DIST="+dist, "ARCHES=amd64", "VERSION=v0.9.0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("release.sh made %v in %s", debs, dist)
	}
	return debs[0]
}

func mainPID(t testing.TB, n *lab.Node) string {
	t.Helper()
	return strings.TrimSpace(nodeRun(t, n, "systemctl", "show", "-p", "MainPID", "--value", "drover"))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

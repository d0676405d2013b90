package packaging

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
)

// standinAgent plays the agent's side of the sd_notify protocol for the
// upgrade test: READY=1, and as STATUS= whatever /run/drover-status says,
// as the agent reports its step (internal/sdnotify's StatusText). The postinst and
// drover idle under test read only that and the journal file.
const standinAgent = `#!/bin/sh
while :; do
	systemd-notify --ready --status="$(cat /run/drover-status)"
	sleep 0.1
done
`

// testInstallAndUpgrade installs deb with dpkg in a real systemd node and
// checks the package's promises: the unit installed but not enabled, and
// not started before node.yaml exists; an upgrade that never restarts the
// agent mid-rollout (a status of a turn, or a journal on disk), waits for
// the turn to end, and then restarts it; remove stops it; purge cleans up.
func testInstallAndUpgrade(t *testing.T, deb string) {
	n := systemdtest.Boot(t, systemdtest.Options{Name: "pkg"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := func(script string) string {
		t.Helper()
		out, err := n.Run(ctx, "sh", "-c", script)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	show := func(prop string) string {
		t.Helper()
		return sh("systemctl show --value -p " + prop + " drover.service")
	}
	n.CopyFile(t, deb, "/root/drover.deb", 0o644)
	// --no-triggers: man-db's index rebuild is not what is tested, and slow.
	install := "dpkg -i --no-triggers /root/drover.deb 2>&1"
	t.Logf("install:\n%s", sh(install))

	if v := sh("drover version"); v != "drover "+testVersion {
		t.Errorf("installed drover version = %q", v)
	}
	if st := sh("systemctl is-enabled drover.service || true"); st != "disabled" {
		t.Errorf("after install the unit is %q, want disabled until configured", st)
	}
	sh("systemctl start drover.service")
	if st, cond := show("ActiveState"), show("ConditionResult"); st != "inactive" || cond != "no" {
		t.Errorf("started before node.yaml exists: %s (condition %s), want inactive: the unit waits for drover init", st, cond)
	}

	// A configured node whose agent is mid-rollout.
	sh("drover init --name pkg --repo https://git.example.com/ops/platform.git")
	n.WriteFile(t, "/usr/local/bin/standin-agent", []byte(standinAgent), 0o755)
	n.WriteFile(t, "/etc/systemd/system/drover.service.d/standin.conf",
		[]byte("[Service]\nExecStart=\nExecStart=/usr/local/bin/standin-agent\nNotifyAccess=all\nWatchdogSec=0\n"), 0o644)
	setStatus := func(s string) { t.Helper(); sh("echo '" + s + "' >/run/drover-status") }
	setStatus("draining 1a2b3c4d5e6f (live 0f0e0d0c0b0a)")
	sh("systemctl daemon-reload && systemctl start drover.service")
	pid := show("MainPID")

	start := time.Now()
	out := sh("DROVER_RESTART_WAIT=2s " + install)
	if !strings.Contains(out, "still mid-rollout") || show("MainPID") != pid {
		t.Fatalf("an upgrade while draining restarted the agent (pid %s → %s):\n%s", pid, show("MainPID"), out)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("the upgrade gave up after %s, before its 2s wait", took)
	}

	// Idle by its status, but a journal on disk: a change is in flight.
	setStatus("idle on 1a2b3c4d5e6f")
	sh("echo '{}' >/var/lib/drover/journal.json")
	if out := sh("DROVER_RESTART_WAIT=1s " + install); show("MainPID") != pid {
		t.Fatalf("an upgrade with a journal on disk restarted the agent:\n%s", out)
	}
	sh("rm /var/lib/drover/journal.json")

	// Mid-rollout when the upgrade starts, idle 2 s later: it waits, then
	// restarts the agent onto the new binary.
	setStatus("verifying 1a2b3c4d5e6f (live 0f0e0d0c0b0a)")
	done := make(chan string, 1)
	start = time.Now()
	go func() {
		out, err := n.Run(ctx, "sh", "-c", "DROVER_RESTART_WAIT=60s "+install)
		if err != nil {
			out += err.Error()
		}
		done <- out
	}()
	time.Sleep(2 * time.Second)
	if show("MainPID") != pid {
		t.Fatal("the upgrade restarted the agent while it was verifying")
	}
	setStatus("idle on 1a2b3c4d5e6f")
	select {
	case out = <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("the upgrade did not end after the agent went idle")
	}
	if np := show("MainPID"); np == pid || np == "0" || show("ActiveState") != "active" {
		t.Fatalf("after the agent went idle the upgrade did not restart it (pid %s → %s, %s):\n%s", pid, np, show("ActiveState"), out)
	}
	t.Logf("upgrade waited %s for the turn to end, then restarted the agent", time.Since(start).Round(100*time.Millisecond))

	sh("dpkg -r drover >/dev/null 2>&1")
	if st := show("ActiveState"); st != "inactive" {
		t.Errorf("after remove the agent is %s", st)
	}
	if _, err := os.Stat(n.Path("/etc/drover/node.yaml")); err != nil {
		t.Errorf("remove took node.yaml with it: %v", err)
	}
	sh("dpkg --purge drover >/dev/null 2>&1")
	for _, p := range []string{"/etc/drover", "/var/lib/drover", "/usr/bin/drover"} {
		if _, err := os.Stat(n.Path(p)); err == nil {
			t.Errorf("purge left %s", p)
		}
	}
}

// testFreshNode is a server's first day with the package, on one node: a
// systemd machine with nginx and no drover installs the .deb, writes
// node.yaml with drover init, passes drover doctor, enables the packaged
// unit as is (the real agent, its hardening, Type=notify), and serves the
// config repo's revision through nginx.
func testFreshNode(t *testing.T, deb string) {
	n := systemdtest.Boot(t, systemdtest.Options{Name: "fresh", PrivateNetwork: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sh := func(script string) string {
		t.Helper()
		out, err := n.Run(ctx, "sh", "-c", script)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	defer func() {
		if t.Failed() {
			t.Logf("journal of drover.service:\n%s", n.Journal("drover.service", 80))
			out, _ := n.Run(ctx, "sh", "-c", "tail -20 /var/log/nginx/error.log; cat /etc/nginx/nginx.conf")
			t.Logf("nginx:\n%s", out)
		}
	}()

	// The config repo, made in the node and read as a file:// URL.
	for name, content := range map[string]string{
		"drover.yaml":           "version: 1\nrollout: {soak: 0s}\nsites:\n  - name: blog\n    serverNames: [blog.test]\n    source: sites/blog\n",
		"sites/blog/index.html": "blog from the package\n",
	} {
		n.WriteFile(t, "/srv/config-src/"+name, []byte(content), 0o644)
	}
	sh("cd /srv/config-src && git init -q -b main . && git add -A && git -c user.name=t -c user.email=t@example.com commit -q -m blog && git clone -q --bare /srv/config-src /srv/config.git")

	if before := sh("command -v drover || true"); before != "" {
		t.Fatalf("the node has a drover before the install: %s", before)
	}
	n.CopyFile(t, deb, "/root/drover.deb", 0o644)
	sh("dpkg -i --no-triggers /root/drover.deb")
	// nginx run by nginx.service, first on 127.0.0.1:80 only: drover's
	// config listens on every address, which nginx cannot take over on a
	// reload, so the first rollout would fail. doctor must say so.
	nginxConf := func(listen string) {
		n.WriteFile(t, "/etc/nginx/nginx.conf", []byte("pid /run/nginx.pid;\nevents {}\nhttp { server { listen "+listen+"; return 200 \"nginx before drover\\n\"; } }\n"), 0o644)
	}
	nginxConf("127.0.0.1:80")
	sh("systemctl start nginx.service")

	t.Logf("init:\n%s", sh("drover init --name fresh --repo file:///srv/config.git"))
	out, err := n.Run(ctx, "drover", "doctor")
	if err == nil || !strings.Contains(out, "fail  ports: :80 (nginx's health port) is held by nginx on 127.0.0.1") {
		t.Fatalf("doctor with nginx on 127.0.0.1:80: %v\n%s", err, out)
	}
	// As Debian's default site does: port 80 of every address.
	nginxConf("80")
	sh("systemctl restart nginx.service")
	out, err = n.Run(ctx, "drover", "doctor")
	t.Logf("doctor:\n%s", out)
	if err != nil {
		t.Fatalf("doctor on the fresh node: %v", err)
	}
	for _, want := range []string{"pass  systemd: systemd", "pass  repo: file:///srv/config.git", "pass  drover.yaml", "pass  ports"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor says no %q", want)
		}
	}

	sh("systemctl enable --now drover.service")
	if st := sh("systemctl is-enabled drover.service"); st != "enabled" {
		t.Errorf("unit is %s after enable", st)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, _ := n.Run(ctx, "curl", "-s", "-m", "2", "-H", "Host: blog.test", "http://127.0.0.1:443/")
		if strings.TrimSpace(body) == "blog from the package" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node does not serve the blog after 90 s (last answer %q); drover status:\n%s", body, sh("drover status || true"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("serving the blog; drover status:\n%s", sh("drover status"))
}

package artifacts

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/command"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
)

const hostileSpec = `version: 1
workers:
  - name: other
    source: workers/other
    exec: [./server.sh]
    port: 3100
    health: {path: /healthz}
  - name: evil
    source: workers/evil
    install: [node, probe.js, --once]
    exec: [node, probe.js]
    port: 3000
    health: {path: /healthz}
    env:
      PRIVATE_FILE: %q
      STATE_DIR: %q
      REV: %q
      OWN_BUNDLE: .
      OTHER_BUNDLE: %q
      LIVE_BUNDLE: %q
`

// TestInstallIsNotRoot runs a hostile install step (a compromised npm
// package, say) that tries to read a secret of the node, write another
// worker's bundle and its own live bundle, write a systemd unit and find the
// agent's secrets in its environment. Each attempt fails; the step can write
// only its new bundle, which is root's again afterwards; its output is kept
// in the release, 0640.
func TestInstallIsNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("run as root (as the suite does): the step must be shown to drop root")
	}
	t.Setenv("DROVER_TEST_TOKEN", "agent-secret") // the agent's environment
	probe, err := os.ReadFile("../units/testdata/hostile/probe.js")
	if err != nil {
		t.Fatal(err)
	}
	etc := testsvc.WorldDir(t, "etc-drover")
	secret := filepath.Join(etc, "webhook.secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"workers/evil/probe.js": "// v1\n", "x:workers/other/server.sh": "#!/bin/sh\n"})
	specFor := func(r string) string {
		return fmt.Sprintf(hostileSpec, secret, s.Dir(), r,
			filepath.Join(s.ReleaseDir(r), "workers", "other"), filepath.Join(s.Dir(), "current", "workers", "evil"))
	}
	live(t, s, rev(1), repo, strings.Replace(specFor(rev(1)), "install: [node, probe.js, --once]", "install: [\"true\"]", 1))

	writeRepo(t, repo, map[string]string{"workers/evil/probe.js": string(probe)})
	r, err := prepare(t, s, rev(2), repo, specFor(rev(2)))
	if err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(r.Dir, "install-evil.log")
	fi, err := os.Stat(logFile)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("install log %s: %v %v, want mode 0640", logFile, fi, err)
	}
	log, _ := os.ReadFile(logFile)
	_, report, ok := strings.Cut(string(log), "PROBE ")
	if !ok {
		t.Fatalf("no probe report in the install log:\n%s", log)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSpace(report)), &got); err != nil {
		t.Fatalf("probe report %q: %v", report, err)
	}
	t.Logf("probe: %v", got)
	for _, attack := range []string{"readSecret", "writeOtherBundle", "writeLiveBundle", "writeSystemd", "listReleases"} {
		if got[attack] == "ok" || got[attack] == "" {
			t.Errorf("%s: %q, want it refused", attack, got[attack])
		}
	}
	if got["writeOwnBundle"] != "ok" || got["readOwnBundle"] != "ok" {
		t.Errorf("the step could not use its own bundle: write %q, read %q", got["writeOwnBundle"], got["readOwnBundle"])
	}
	if got["agentSecretsInEnv"] != "" {
		t.Errorf("the agent's environment reached the step: %s", got["agentSecretsInEnv"])
	}
	for _, p := range []string{"/etc/systemd/system/pwned.service", filepath.Join(s.ReleaseDir(rev(2)), "workers", "other", "pwned"), filepath.Join(s.LiveDir(), "workers", "evil", "pwned")} {
		if _, err := os.Lstat(p); err == nil {
			os.Remove(p)
			t.Errorf("the step wrote %s", p)
		}
	}
	// What it wrote in its bundle is root's now, and nobody else's to change.
	var st syscall.Stat_t
	pwned := filepath.Join(r.WorkerDir("evil"), "pwned")
	if err := syscall.Lstat(pwned, &st); err != nil || st.Uid != 0 || st.Mode&0o022 != 0 {
		t.Errorf("%s after the step: uid %d mode %o (%v), want root's, not group/other writable", pwned, st.Uid, st.Mode&0o7777, err)
	}
}

// TestInstallFailureTailIsRedacted: a failed step's error (which reaches
// status, Redis and the journal) carries a short tail with credentials
// hidden; the whole output stays in the release's log.
func TestInstallFailureTailIsRedacted(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"workers/api/server.sh": "v1"})
	script := `for i in $(seq 1 200); do echo "fetching package $i"; done; ` +
		// The secrets are split in the script, so that only its output,
		// not its argv (which is the spec's), holds them whole.
		`echo "npm ERR! GET https://deploy:hun""ter2@registry.example.com/x failed"; ` +
		`echo "npm ERR! //registry.example.com/:_authToken=npm_SECRET""SECRET"; ` +
		`echo "Authorization: Bearer abcdefgh""ijklmnop"; echo "password=sword""fish"; exit 1`
	_, err := prepare(t, s, rev(1), repo, fmt.Sprintf(installSpec, script, "10s"))
	wantErr(t, err, "install worker api", "exit status 1", "registry.example.com", "(whole output in ")
	for _, leak := range []string{"hunter2", "npm_SECRETSECRET", "abcdefghijklmnop", "swordfish", "fetching package 1\n"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("the error carries %q:\n%v", leak, err)
		}
	}
	if len(err.Error()) > 1024 {
		t.Errorf("the error is %d bytes, want a short tail", len(err.Error()))
	}
	var ce *command.Error
	if errors.As(err, &ce) {
		t.Error("the error wraps the command's, whose output is unredacted")
	}
	log, rerr := os.ReadFile(filepath.Join(s.ReleaseDir(rev(1)), "install-api.log"))
	if rerr == nil && !strings.Contains(string(log), "fetching package 1\n") {
		t.Errorf("the release's install log lacks the start of the output")
	}
}

// TestInstallLimitsUnderExec: on a node without systemd (the exec
// supervisor's), an install step runs as nobody with a clean environment,
// under RLIMIT_CORE 0 and RLIMIT_FSIZE (a file past the limit stops at it),
// in a process group that is killed whole at its installTimeout.
func TestInstallLimitsUnderExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("run as root (as the suite does): the step must be shown to drop root")
	}
	t.Setenv("DROVER_TEST_TOKEN", "agent-secret") // the agent's environment
	s := openStore(t, Options{MaxInstallFileBytes: 1 << 20})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"workers/api/server.sh": "v1"})
	script := `echo "uid $(id -u)"; grep -E "^Max (core file|file) size" /proc/self/limits; env | sort; ` +
		`head -c 2097152 /dev/zero > big; echo "big: $?"`
	r, err := prepare(t, s, rev(1), repo, fmt.Sprintf(installSpec, script, "30s"))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(filepath.Join(r.Dir, "install-api.log"))
	for _, re := range []string{`(?m)^uid 65534$`, `(?m)^Max core file size\s+0\s+0\s+bytes\s*$`, `(?m)^Max file size\s+1048576\s+1048576\s+bytes\s*$`,
		`(?m)^big: 153$`, `(?m)^PATH=/usr/local/sbin:`, `(?m)^CI=true$`} {
		if !regexp.MustCompile(re).Match(log) {
			t.Errorf("install log lacks %s:\n%s", re, log)
		}
	}
	if strings.Contains(string(log), "agent-secret") {
		t.Errorf("the agent's environment reached the step:\n%s", log)
	}
	if fi, err := os.Stat(filepath.Join(r.WorkerDir("api"), "big")); err != nil || fi.Size() > 1<<20 {
		t.Errorf("big: %v %v, want it stopped at 1 MiB", fi, err)
	}

	pids := testsvc.WorldDir(t, "install-pids")
	if err := os.Chmod(pids, 0o777); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(pids, "child")
	start := time.Now()
	_, err = prepare(t, s, rev(2), repo, fmt.Sprintf(installSpec, "sleep 60 & echo $! > "+pidFile+"; sleep 60", "1s"))
	wantErr(t, err, "install worker api", "timed out")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the timed-out step took %s", took)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the step's background child %d outlived its timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z") && !strings.HasPrefix(after, "X")
}

// TestInstallCredential: whom a step runs as, for a root agent and for one
// that is not: never root, and never silently the agent's own user in
// place of the one the worker names.
func TestInstallCredential(t *testing.T) {
	for _, c := range []struct {
		user string
		euid int
		uid  int // -1: the agent's own (nil credential)
		err  string
	}{
		{"", 0, nobody, ""},
		{"nobody", 0, nobody, ""},
		{"root", 0, nobody, ""}, // a root worker the node allows: its step is nobody
		{"no-such-user-19", 0, 0, `user "no-such-user-19"`},
		{"", 1000, -1, ""},
		{"nobody", nobody, -1, ""},
		{"nobody", 1000, 0, `the agent runs as uid 1000 and cannot run the install step as user "nobody"`},
		{"root", 1000, 0, `cannot run the install step as user "root"`},
	} {
		cred, err := installCredential(&spec.Worker{Name: "api", User: c.user}, c.euid)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("user %q, euid %d: %v %v, want error %q", c.user, c.euid, cred, err, c.err)
			}
		case err != nil:
			t.Errorf("user %q, euid %d: %v", c.user, c.euid, err)
		case c.uid == -1 && cred != nil:
			t.Errorf("user %q, euid %d: runs as %d, want the agent's own", c.user, c.euid, cred.Uid)
		case c.uid >= 0 && (cred == nil || int(cred.Uid) != c.uid || int(cred.Gid) != c.uid || len(cred.Groups) != 0):
			t.Errorf("user %q, euid %d: %+v, want uid and gid %d, no groups", c.user, c.euid, cred, c.uid)
		}
	}
}

//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/plan"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/secrets"
)

// secretWorkerJS answers /secret with its API_TOKEN, so the test sees what
// the worker got, over loopback through nginx.
const secretWorkerJS = `"use strict";
const http = require("node:http");
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") { res.writeHead(200); return res.end("ok\n"); }
  res.writeHead(200, {"Content-Type": "text/plain"});
  res.end(String(process.env.API_TOKEN) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
server.listen(Number(process.env.PORT), "127.0.0.1");
`

// commitSecret commits a revision whose api worker echoes API_TOKEN, set
// from secrets/api.env.age encrypted to recipients.
func (n *testNode) commitSecret(blog, value, recipients string) string {
	n.t.Helper()
	n.specExtra = "    secretEnv: secrets/api.env.age\n"
	clear := filepath.Join(n.t.TempDir(), "api.env")
	if err := os.WriteFile(clear, []byte("API_TOKEN="+value+"\n"), 0o600); err != nil {
		n.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(n.repo, "secrets"), 0o755); err != nil {
		n.t.Fatal(err)
	}
	runCLI(n.t, "secrets", "encrypt", "--recipients", recipients, "-o", filepath.Join(n.repo, "secrets", "api.env.age"), clear)
	// One commit: agents poll every second, and one that saw a commit
	// amended after it would judge (and halt) a revision the test never
	// names.
	n.workerJS = secretWorkerJS
	defer func() { n.workerJS = "" }()
	return n.commit(blog, "unused")
}

func (n *testNode) servesSecret(want string) {
	n.t.Helper()
	for range 4 { // both instances
		if code, body := n.get("api.test", "/secret"); code != 200 || body != want {
			n.t.Errorf("api /secret: %d %q, want 200 %q", code, body, want)
		}
	}
}

// noClearValue fails if any file under root, other than the release's
// 0600 secret env files, holds one of values.
func noClearValue(t *testing.T, root string, values ...string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, v := range values {
			if !bytes.Contains(data, []byte(v)) {
				continue
			}
			if fi, _ := d.Info(); filepath.Base(filepath.Dir(p)) == "secrets" && strings.HasSuffix(p, ".env") && fi.Mode().Perm() == 0o600 {
				continue
			}
			t.Errorf("%s holds a clear secret value", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAgentGivesWorkersTheirSecretsAndShowsNoValue(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	key := filepath.Join(n.dir, "node.key")
	recipient := strings.TrimSpace(runCLI(t, "secrets", "keygen", "-o", key))
	recipients := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(recipients, []byte("# the nodes\n"+recipient+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(runCLI(t, "secrets", "recipients", "--identity", key)); got != recipient {
		t.Fatalf("secrets recipients = %q, keygen printed %q", got, recipient)
	}
	n.configure("test", "./repo", "secrets: {identityFile: node.key}\n")

	first, second := `tok-1 'q' "dq" $HOME \x #h`, `tok-2 changed $PATH`
	a := n.commitSecret("blog A", first, recipients)
	n.startAgent()
	n.waitLive(a)
	n.servesSecret(first)
	envFile := filepath.Join(n.state, "releases", a, "secrets", "api.env")
	fi, err := os.Stat(envFile)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
		t.Fatalf("secret env file %s: %v, mode %v; want 0600, owned by the worker's user (the agent's here)", envFile, err, fi.Mode())
	}

	// plan beside the stopped agent: the change is named, no value shown.
	n.stopAgent(syscall.SIGTERM)
	b := n.commitSecret("blog B", second, recipients)
	js := runCLI(t, "plan", "-o", "json", "--config", n.config)
	var p struct{ Workers []plan.Change }
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Workers) != 1 || !slices.Contains(p.Workers[0].What, "secret API_TOKEN=<changed>") {
		t.Errorf("plan -o json does not show the secret's change:\n%s", js)
	}
	if text := runCLI(t, "plan", "--config", n.config); !strings.Contains(text, "secret API_TOKEN=<changed>") {
		t.Errorf("plan does not show the secret's change:\n%s", text)
	}
	for _, v := range []string{first, second} {
		if strings.Contains(js, v) {
			t.Errorf("plan -o json shows a clear value")
		}
	}
	n.startAgent()
	n.waitLive(b)
	n.servesSecret(second)

	// A file this node cannot decrypt halts the revision before anything
	// is prepared or drained; the node keeps serving B.
	other := filepath.Join(t.TempDir(), "other.key")
	otherRecipient := strings.TrimSpace(runCLI(t, "secrets", "keygen", "-o", other))
	elsewhere := filepath.Join(t.TempDir(), "elsewhere.txt")
	if err := os.WriteFile(elsewhere, []byte(otherRecipient+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := n.commitSecret("blog C", "tok-3", elsewhere)
	n.waitFor("C halted", func(st reconcile.Status) bool {
		return st.Target == c && st.Step == reconcile.StepFailed || strings.Contains(st.Error, "revision "+c[:12]+" is halted")
	})
	halted, _ := os.ReadFile(layout.New(n.state).Halted())
	if !strings.Contains(string(halted), "secrets/api.env.age: does not decrypt") {
		t.Errorf("the halt does not name the secret file:\n%s", halted)
	}
	if _, err := os.Stat(filepath.Join(n.state, "releases", c)); err == nil {
		t.Errorf("a release was prepared for the revision whose secret does not decrypt")
	}
	n.servesSecret(second)
	if code, body := n.get("blog.test", "/"); code != 200 || body != "blog B" {
		t.Errorf("blog: %d %q, want blog B", code, body)
	}

	noClearValue(t, n.dir, first, second)
	for _, v := range []string{first, second} {
		if strings.Contains(n.logs(), v) {
			t.Errorf("the agent's log holds a clear value")
		}
	}
}

// An identity readable by others stops the agent at start.
func TestAgentRefusesAnIdentityReadableByOthers(t *testing.T) {
	n := newTestNode(t)
	key := filepath.Join(n.dir, "node.key")
	runCLI(t, "secrets", "keygen", "-o", key)
	os.Chmod(key, 0o644)
	n.configure("test", "./repo", "secrets: {identityFile: node.key}\n")
	out, err := exec.Command(droverBin, "agent", "--config", n.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "chmod 600 "+key) {
		t.Fatalf("agent with a 0644 identity: %v\n%s", err, out)
	}
}

func TestSecretsEditReencryptsAndWipesTheClearCopy(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "dev.key")
	recipient := strings.TrimSpace(runCLI(t, "secrets", "keygen", "-o", key))
	recipients := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(recipients, []byte(recipient+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "api.env.age")
	clear := filepath.Join(dir, "in.env")
	os.WriteFile(clear, []byte("API_TOKEN=old-value\n"), 0o600)
	runCLI(t, "secrets", "encrypt", "--recipients", recipients, "-o", secret, clear)

	// The editor records the file it was given, then edits it.
	seen := filepath.Join(dir, "seen")
	editor := filepath.Join(dir, "editor.sh")
	os.WriteFile(editor, []byte("#!/bin/sh\nstat -c %a \"$1\" > "+seen+"\necho \"$1\" >> "+seen+"\nsed -i 's/old-value/new value/' \"$1\"\n"), 0o755)
	cmd := exec.Command(droverBin, "secrets", "edit", "--recipients", recipients, "--identity", key, secret)
	cmd.Env = append(os.Environ(), "EDITOR="+editor)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("secrets edit: %v\n%s", err, out)
	}
	rec, _ := os.ReadFile(seen)
	mode, tmp, _ := strings.Cut(strings.TrimSpace(string(rec)), "\n")
	if mode != "600" {
		t.Errorf("the editor's clear copy had mode %s, want 600", mode)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clear copy %s is still there: %v", tmp, err)
	}
	ct, _ := os.ReadFile(secret)
	if bytes.Contains(ct, []byte("value")) {
		t.Fatal("the edited file holds clear text")
	}
	id, err := secrets.LoadIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := id.Decrypt(secret, ct)
	if err != nil || len(vs) != 1 || vs[0].Value != "new value" {
		t.Fatalf("after edit: %q, %v", vs, err)
	}

	// An editor that fails leaves the file as it was.
	cmd = exec.Command(droverBin, "secrets", "edit", "--recipients", recipients, "--identity", key, secret)
	cmd.Env = append(os.Environ(), "EDITOR=false")
	if err := cmd.Run(); err == nil {
		t.Error("secrets edit with a failing editor exited 0")
	}
	if after, _ := os.ReadFile(secret); !bytes.Equal(after, ct) {
		t.Error("a failed edit changed the file")
	}
}

func TestValidateRefusesASecretEnvInClear(t *testing.T) {
	n := newTestNode(t)
	n.specExtra = "    secretEnv: secrets/api.env.age\n"
	n.write("repo/secrets/api.env.age", "API_TOKEN=committed-in-clear\n")
	n.commit("blog A", "api A")
	cmd := exec.Command(droverBin, "validate", n.repo)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "workers[0].secretEnv: secrets/api.env.age is not age-encrypted") {
		t.Fatalf("validate of a clear secretEnv: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "committed-in-clear") {
		t.Errorf("validate printed the value")
	}
}

// TestClusterHaltsASecretANodeCannotDecrypt: the secret is encrypted to
// node1 only. Every other node refuses the revision while preparing, before
// the lock: it halts it cluster-wide, naming the file, and never drains.
func TestClusterHaltsASecretANodeCannotDecrypt(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 3, clusterSection(r.Addr)+"secrets: {identityFile: node.key}\n", cluster.Config{Addrs: []string{r.Addr}})
	var recipients []string
	for _, n := range tc.nodes {
		recipients = append(recipients, strings.TrimSpace(runCLI(t, "secrets", "keygen", "-o", filepath.Join(n.dir, "node.key"))))
	}
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)

	only1 := filepath.Join(t.TempDir(), "recipients.txt")
	os.WriteFile(only1, []byte(recipients[0]+"\n"), 0o644)
	b := tc.repo.commitSecret("blog B", "tok-cluster", only1)
	deadline := time.Now().Add(time.Minute)
	var halts []cluster.Halt
	for {
		var err error
		halts, err = tc.cl.HaltedAll(context.Background())
		if err == nil && len(halts) == 1 && halts[0].Rev == b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision not halted: %+v %v", halts, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if halts[0].Node == "node1" || !strings.Contains(halts[0].Reason, "secrets/api.env.age: does not decrypt") {
		t.Errorf("halt by %s: %s; want a node without the recipient, naming the file", halts[0].Node, halts[0].Reason)
	}
	time.Sleep(3 * time.Second) // a few more polls
	for _, n := range tc.nodes[1:] {
		if strings.Contains(n.logs(), "step=draining rev="+b[:12]) {
			t.Errorf("%s drained for the revision it cannot decrypt", n.name)
		}
		if code, body := n.get("blog.test", "/"); code != 200 || body != "blog A" {
			t.Errorf("%s serves %d %q, want blog A", n.name, code, body)
		}
		if strings.Contains(n.logs(), "tok-cluster") {
			t.Errorf("%s logged the clear value", n.name)
		}
	}
}

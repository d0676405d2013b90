package control

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// The operator's acts in-process, against a real Redis (or the state dir
// without a cluster). The acts that need the config repo (pin, rollback,
// plan) are proven through the binary by cmd/drover's tagged tests.

const (
	revA = "aaaa111111111111111111111111111111111111"
	revB = "aaaa222222222222222222222222222222222222"
)

// open writes node.yaml (with cluster as its cluster section, "" for
// none) and opens it as drover's commands do.
func open(t *testing.T, clusterYAML string) *Control {
	t.Helper()
	dir := t.TempDir()
	doc := "name: n1\nstateDir: " + filepath.Join(dir, "state") + "\nrepo: {url: https://git.example.com/ops/site.git}\n" + clusterYAML
	file := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := spec.LoadNode(file)
	if err != nil {
		t.Fatalf("node.yaml: %v", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	k, err := Open(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	k.By = "ops@test"
	return k
}

func actions(t *testing.T, k *Control, rev string) []string {
	t.Helper()
	revs, err := k.History().List(t.Context(), 0)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	var out []string
	for _, r := range revs {
		if r.Rev == rev {
			for _, a := range r.Actions {
				out = append(out, a.What+" by "+a.By)
			}
		}
	}
	return out
}

func TestClearInTheCluster(t *testing.T) {
	r := testsvc.StartRedis(t)
	k := open(t, "cluster: {redis: ["+r.Addr+"]}\n")
	ctx := t.Context()
	for _, rev := range []string{revA, revB} {
		if err := k.Cluster().Halt(ctx, rev, "checks failed"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.Clear(ctx, "aaaa"); err == nil || !strings.Contains(err.Error(), "ambiguous revision prefix aaaa") {
		t.Errorf("clear of a prefix two halted revisions share: %v, want ambiguous", err)
	}
	if _, err := k.Clear(ctx, "bbbb"); err == nil || !strings.Contains(err.Error(), `no halted revision starts with "bbbb"`) {
		t.Errorf("clear of a prefix no halted revision has: %v", err)
	}
	got, err := k.Clear(ctx, "aaaa2")
	if err != nil || got != revB {
		t.Fatalf("clear aaaa2 = %q, %v; want %s", got, err, revB)
	}
	if _, halted, _ := k.Halted(ctx, revB); halted {
		t.Error("B is still halted after clear")
	}
	if _, halted, _ := k.Halted(ctx, revA); !halted {
		t.Error("clear of B cleared A too")
	}
	if a := actions(t, k, revB); len(a) != 1 || a[0] != "cleared by ops@test" {
		t.Errorf("history of B: %q, want the clear by its operator", a)
	}
}

func TestPauseAndResume(t *testing.T) {
	r := testsvc.StartRedis(t)
	k := open(t, "cluster: {redis: ["+r.Addr+"]}\n")
	ctx := t.Context()
	if err := k.Pause(ctx, "db maintenance"); err != nil {
		t.Fatal(err)
	}
	reason, paused, err := k.Cluster().Paused(ctx)
	if err != nil || !paused || reason != "db maintenance (ops@test)" {
		t.Errorf("after pause: %q, %v, %v; want paused with the reason and who", reason, paused, err)
	}
	if err := k.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if _, paused, _ := k.Cluster().Paused(ctx); paused {
		t.Error("still paused after resume")
	}
}

func TestWithoutACluster(t *testing.T) {
	k := open(t, "")
	ctx := t.Context()
	for name, act := range map[string]func() error{
		"pause":  func() error { return k.Pause(ctx, "") },
		"resume": func() error { return k.Resume(ctx) },
		"forget": func() error { return k.Forget(ctx, "n2") },
	} {
		if err := act(); err == nil || !strings.Contains(err.Error(), name+" needs a cluster") {
			t.Errorf("%s without a cluster: %v, want a clear refusal", name, err)
		}
	}
	// A halt on this node lives in its state dir; clear finds it there.
	file := &reconcile.FileRegistry{Dir: k.Node().StateDir}
	if err := file.Halt(ctx, revA, "checks failed"); err != nil {
		t.Fatal(err)
	}
	got, err := k.Clear(ctx, "aaaa1")
	if err != nil || got != revA {
		t.Fatalf("clear on a single node = %q, %v", got, err)
	}
	if _, halted, _ := k.Halted(ctx, revA); halted {
		t.Error("still halted in the state dir after clear")
	}
	st, err := k.LocalStatus(ctx)
	if err != nil || st.Step != reconcile.StepIdle || len(st.Halted) != 0 {
		t.Errorf("status of a node whose agent never ran: %+v, %v; want idle, nothing halted", st, err)
	}
	if _, err := k.Sync(ctx); err == nil || !strings.Contains(err.Error(), "no agent is running") {
		t.Errorf("sync with no agent: %v", err)
	}
}

func TestParseRev(t *testing.T) {
	for in, want := range map[string]string{"AAAA": "aaaa", " abc123 ": "abc123", revA: revA} {
		if got, err := ParseRev(in); err != nil || got != want {
			t.Errorf("ParseRev(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "main", "HEAD~1", "aaaa;rm"} {
		if _, err := ParseRev(in); err == nil {
			t.Errorf("ParseRev(%q) accepted it", in)
		}
	}
}

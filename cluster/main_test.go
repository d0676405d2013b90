package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/reconcile"
)

// Compile-time checks: the cluster is reconcile's lock and registry.
var (
	_ reconcile.Lock     = (*Cluster)(nil)
	_ reconcile.Registry = (*Cluster)(nil)
)

// holderEnv makes the test binary a node that takes the rollout lock and
// waits to be killed (see TestLockFreedWhenHolderKilled).
const holderEnv = "DROVER_TEST_LOCK_HOLDER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(holderEnv); addr != "" {
		holdUntilKilled(addr)
		return
	}
	// go-redis logs every failed dial; the tests kill servers on purpose.
	redis.SetLogger(quietLogger{})
	code := m.Run()
	if code == 0 && leaked() {
		code = 1
	}
	os.Exit(code)
}

// holdUntilKilled takes the lock as node "doomed", says so on stdout and
// waits for SIGKILL.
func holdUntilKilled(addr string) {
	ctx := context.Background()
	c, err := Open(ctx, Config{Addrs: []string{addr}, LockExpiry: holderExpiry}, "doomed", nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	if _, _, err := c.Acquire(ctx, "rev-doomed", 1); err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("held")
	select {}
}

// leaked reports goroutines of this package still running after the tests.
func leaked() bool {
	deadline := time.Now().Add(3 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var bad []string
		for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
			s := string(g)
			if strings.Contains(s, "drover/cluster.(*") && !strings.Contains(s, "cluster.leaked") {
				bad = append(bad, s)
			}
		}
		if len(bad) == 0 {
			return false
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "goroutines leaked by package cluster:\n%s\n", strings.Join(bad, "\n\n"))
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// testLog writes the handle's log into the test's output with -v.
func testLog(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// open connects node to cfg's Redis and closes it when the test ends.
func open(t *testing.T, cfg Config, node string) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := Open(ctx, cfg, node, testLog(t))
	if err != nil {
		t.Fatalf("open %s: %v", node, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rdb is a plain client to addr for looking under the hood.
func rdb(t *testing.T, addr string) *redis.Client {
	r := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// eventually polls ok until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

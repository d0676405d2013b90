package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// holderExpiry is the lock expiry of the node that gets killed.
const holderExpiry = 1500 * time.Millisecond

// occupancy counts the nodes inside the critical section and remembers the
// most ever seen at once.
type occupancy struct {
	cur, peak, total atomic.Int32
}

func (o *occupancy) enter() {
	n := o.cur.Add(1)
	o.total.Add(1)
	for p := o.peak.Load(); n > p && !o.peak.CompareAndSwap(p, n); p = o.peak.Load() {
	}
}

func (o *occupancy) exit() { o.cur.Add(-1) }

// contend runs nodes goroutines, each its own Cluster handle (its own
// connections, like a separate process), each taking the lock rounds times
// and holding it a few milliseconds.
func contend(t *testing.T, cfg Config, nodes, rounds, slots int) *occupancy {
	t.Helper()
	var o occupancy
	var wg sync.WaitGroup
	for i := range nodes {
		c := open(t, cfg, fmt.Sprintf("node-%d", i))
		wg.Go(func() {
			for r := range rounds {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				held, release, err := c.Acquire(ctx, fmt.Sprintf("rev-%d", r), slots)
				if err != nil {
					cancel()
					t.Errorf("%s: acquire: %v", c.Node(), err)
					return
				}
				o.enter()
				select {
				case <-time.After(time.Duration(5+rand.IntN(10)) * time.Millisecond):
				case <-held.Done():
					t.Errorf("%s lost the lock while holding it: %v", c.Node(), context.Cause(held))
				}
				o.exit()
				if err := release(ctx); err != nil {
					t.Errorf("%s: release: %v", c.Node(), err)
				}
				if held.Err() == nil {
					t.Errorf("%s: held context still live after release", c.Node())
				}
				if err := release(ctx); err != nil {
					t.Errorf("%s: second release is not a no-op: %v", c.Node(), err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	return &o
}

// The lock's first promise: never more holders than slots, for one server,
// for a Redlock of three masters (also with one of them dead), and with
// maxUnavailable 2.
func TestLockMutualExclusion(t *testing.T) {
	t.Parallel()
	single := testsvc.StartRedis(t)
	masters := []*testsvc.Redis{testsvc.StartRedis(t), testsvc.StartRedis(t), testsvc.StartRedis(t)}
	degraded := []*testsvc.Redis{testsvc.StartRedis(t), testsvc.StartRedis(t), testsvc.StartRedis(t)}
	degraded[2].Kill()
	addrs := func(rs []*testsvc.Redis) []string {
		var a []string
		for _, r := range rs {
			a = append(a, r.Addr)
		}
		return a
	}
	for _, tc := range []struct {
		name  string
		addrs []string
		slots int
	}{
		{"single", []string{single.Addr}, 1},
		{"redlock", addrs(masters), 1},
		{"redlock-one-master-dead", addrs(degraded), 1},
		{"maxUnavailable-2", []string{single.Addr}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Addrs: tc.addrs, Cluster: tc.name, LockExpiry: 3 * time.Second, PollMax: 100 * time.Millisecond}
			const nodes, rounds = 8, 4
			o := contend(t, cfg, nodes, rounds, tc.slots)
			if got := o.total.Load(); got != nodes*rounds {
				t.Errorf("%d turns taken, want %d", got, nodes*rounds)
			}
			if got := o.peak.Load(); got != int32(tc.slots) {
				t.Errorf("at most %d nodes held the lock at once, want exactly %d (the slots)", got, tc.slots)
			}
		})
	}
}

// A node SIGKILLed while holding the lock (a real process, so nothing
// unlocks or extends) frees its slot when the expiry passes, not before.
func TestLockFreedWhenHolderKilled(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+r.Addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		t.Fatalf("holder process said %q (%v)", line, err)
	}
	heldAt := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	c := open(t, Config{Addrs: []string{r.Addr}, LockExpiry: holderExpiry, PollMax: 100 * time.Millisecond}, "survivor")
	hs, err := c.Holders(t.Context())
	if err != nil || len(hs) != 1 || hs[0].Node != "doomed" || hs[0].Rev != "rev-doomed" {
		t.Errorf("holders while the dead node's lock is valid: %+v, %v", hs, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, release, err := c.Acquire(ctx, "rev-next", 1)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(heldAt)
	defer release(ctx)
	t.Logf("the dead holder's lock passed on %s after it was taken (expiry %s)", took.Round(time.Millisecond), holderExpiry)
	if took < holderExpiry-100*time.Millisecond {
		t.Errorf("lock taken %s after the dead node took it: before its expiry %s", took, holderExpiry)
	}
	if took > holderExpiry+2*time.Second {
		t.Errorf("lock taken only %s after the dead node took it (expiry %s)", took, holderExpiry)
	}
	hs, _ = c.Holders(t.Context())
	if len(hs) != 1 || hs[0].Node != "survivor" {
		t.Errorf("holders now: %+v", hs)
	}
}

// A holder that is alive but cannot extend stops believing it holds the
// lock before any other node can take it.
func TestLockLostWhenExtensionFails(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, LockExpiry: 1500 * time.Millisecond, PollMax: 100 * time.Millisecond}

	t.Run("cut off from redis", func(t *testing.T) {
		cfg := cfg
		cfg.Cluster = "partition"
		a, b := open(t, cfg, "a"), open(t, cfg, "b")
		held, _, err := a.Acquire(t.Context(), "rev", 1)
		if err != nil {
			t.Fatal(err)
		}
		// A network partition between a and Redis: every call fails.
		_ = a.masters[0].Close()
		bTook := make(chan time.Time, 1)
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if _, release, err := b.Acquire(ctx, "rev", 1); err != nil {
				t.Error(err)
				close(bTook)
			} else {
				bTook <- time.Now()
				_ = release(ctx)
			}
		}()
		<-held.Done()
		aLost := time.Now()
		if !errors.Is(context.Cause(held), ErrLockLost) {
			t.Errorf("cause: %v, want ErrLockLost", context.Cause(held))
		}
		bAt, ok := <-bTook
		if !ok {
			return
		}
		t.Logf("a gave up %s before b took the lock", bAt.Sub(aLost).Round(time.Millisecond))
		if !aLost.Before(bAt) {
			t.Errorf("b took the lock at %s, before a gave it up at %s", bAt, aLost)
		}
	})

	t.Run("taken over in redis", func(t *testing.T) {
		// What a failover that lost the key looks like: the key is
		// someone else's at the next extension.
		cfg := cfg
		cfg.Cluster = "stolen"
		a := open(t, cfg, "a")
		held, release, err := a.Acquire(t.Context(), "rev", 1)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := rdb(t, r.Addr).Set(t.Context(), a.key("lock", "slot", "0"), "someone-else", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-held.Done():
		case <-time.After(cfg.LockExpiry):
			t.Fatal("held context still live a full expiry after the lock was taken over")
		}
		t.Logf("loss noticed after %s (extension every %s)", time.Since(start).Round(time.Millisecond), cfg.LockExpiry/3)
		if !errors.Is(context.Cause(held), ErrLockLost) {
			t.Errorf("cause: %v, want ErrLockLost", context.Cause(held))
		}
		if err := release(t.Context()); err == nil {
			t.Error("release of a lost lock reported success")
		}
		if v, _ := rdb(t, r.Addr).Get(t.Context(), a.key("lock", "slot", "0")).Result(); v != "someone-else" {
			t.Errorf("release deleted another holder's lock: key is %q", v)
		}
	})
}

// Waiting is bounded by ctx and says who holds the lock.
func TestLockWaitBoundedByContext(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, LockExpiry: 5 * time.Second, PollMax: 100 * time.Millisecond}
	a, b := open(t, cfg, "a"), open(t, cfg, "b")
	_, release, err := a.Acquire(t.Context(), "0123456789abcdef", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer release(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = b.Acquire(ctx, "rev", 1)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "held by a (rev 0123456789ab") {
		t.Fatalf("err = %v, want a deadline error naming the holder", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Acquire returned %s after its deadline of 400ms", took)
	}
}

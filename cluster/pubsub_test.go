package cluster

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// A sync request wakes subscribers; a dropped subscription (connection
// killed, Redis restarted) comes back by itself and pokes once, since a
// request may have been missed.
func TestSyncPubSubResubscribes(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, HeartbeatTTL: 3 * time.Second, PollMax: 200 * time.Millisecond}
	sub, pub := open(t, cfg, "sub"), open(t, cfg, "pub")
	ctx := t.Context()
	pokes := make(chan struct{}, 100)
	if err := sub.Subscribe(ctx, func() { pokes <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	subscribed := func(addr string) func() bool {
		return func() bool {
			n, err := rdb(t, addr).PubSubNumSub(ctx, sub.key("sync")).Result()
			return err == nil && n[sub.key("sync")] == 1
		}
	}
	drain := func() {
		for len(pokes) > 0 {
			<-pokes
		}
	}
	expectPoke := func(what string) {
		t.Helper()
		select {
		case <-pokes:
		case <-time.After(5 * time.Second):
			t.Fatalf("no poke after %s", what)
		}
	}
	eventually(t, 5*time.Second, "the subscription", subscribed(r.Addr))
	if err := pub.PublishSync(ctx, "push to main"); err != nil {
		t.Fatal(err)
	}
	expectPoke("a sync request")

	// The server drops the subscriber's connection.
	if err := rdb(t, r.Addr).ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	expectPoke("re-subscribing after CLIENT KILL")
	eventually(t, 5*time.Second, "the subscription after CLIENT KILL", subscribed(r.Addr))
	drain()
	if err := pub.PublishSync(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	expectPoke("a sync request after CLIENT KILL")

	// Redis dies and comes back on the same port, empty.
	r.Kill()
	start := time.Now()
	restartRedis(t, r.Port)
	eventually(t, 10*time.Second, "the subscription after a restart", subscribed(r.Addr))
	t.Logf("subscription restored %s after the restart", time.Since(start).Round(time.Millisecond))
	drain()
	if err := pub.PublishSync(ctx, "after restart"); err != nil {
		t.Fatal(err)
	}
	expectPoke("a sync request after the restart")

	// Subscribe's goroutine ends with its context.
	sctx, cancel := context.WithCancel(ctx)
	if err := pub.Subscribe(sctx, func() {}); err != nil {
		t.Fatal(err)
	}
	cancel()
}

// restartRedis starts an empty redis-server on port (testsvc.StartRedis
// picks its own port) and kills it when the test ends.
func restartRedis(t *testing.T, port int) *exec.Cmd {
	cmd := exec.Command(testsvc.Bin(t, "redis-server"), "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", t.TempDir(), "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not come back on %s", addr)
		}
	}
}

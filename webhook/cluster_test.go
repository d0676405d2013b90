package webhook

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/testsvc"
)

// The cluster is the webhook's shared deduper and its trigger.
var (
	_ Deduper = (*cluster.Cluster)(nil)
	_ Trigger = (*cluster.Cluster)(nil).PublishSync
)

// Two nodes behind a load balancer, sharing a real Redis: a push wakes the
// subscribed agents, and its redelivery to the other node changes nothing.
func TestThroughTheCluster(t *testing.T) {
	r := testsvc.StartRedis(t)
	ctx := t.Context()
	open := func(node string) *cluster.Cluster {
		c, err := cluster.Open(ctx, cluster.Config{Addrs: []string{r.Addr}}, node, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := open("a"), open("b")
	pokes := make(chan struct{}, 10)
	if err := b.Subscribe(ctx, func() { pokes <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	ha := newHandler(t, Config{Dedupe: a}, a.PublishSync)
	hb := newHandler(t, Config{Dedupe: b}, b.PublishSync)
	gh := providers[0]
	body := gh.push("main")
	hdr := gh.headers("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	gh.sign(hdr, secret, body)

	// The subscription may take a moment: deliver until it is woken.
	deadline := time.Now().Add(5 * time.Second)
	for woken := false; !woken; {
		w := post(ha, hdr, body)
		select {
		case <-pokes:
			woken = true
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatalf("no agent woken; last answer %d", w.Code)
			}
			hdr.Set("X-GitHub-Delivery", time.Now().String()) // a fresh delivery
			gh.sign(hdr, secret, body)
		}
	}
	if w := post(hb, hdr, body); w.Code != http.StatusOK {
		t.Fatalf("redelivery to node b: %d", w.Code)
	}
	select {
	case <-pokes:
		t.Error("a redelivery woke the agents again")
	case <-time.After(300 * time.Millisecond):
	}
	events, err := a.Events(context.Background(), 10)
	if err != nil || len(events) == 0 || events[len(events)-1].Node != "a" {
		t.Errorf("events: %+v, %v", events, err)
	}
}

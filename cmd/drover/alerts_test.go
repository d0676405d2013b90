//go:build e2e

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/notify"
)

// receiver is a real HTTP server that records what it is sent.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newReceiver(t *testing.T, status int, hang <-chan struct{}) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-req.Context().Done():
			}
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) events(t *testing.T) []notify.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var es []notify.Event
	for _, b := range r.bodies {
		var e notify.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("webhook body %q: %v", b, err)
		}
		es = append(es, e)
	}
	return es
}

func count(es []notify.Event, id string) int {
	n := 0
	for _, e := range es {
		if e.ID == id {
			n++
		}
	}
	return n
}

// TestClusterNotifiesOncePerEvent: three agents, each configured with the
// same receivers (a JSON webhook, a Slack-compatible one, one that hangs,
// one that answers 500, and a sendmail-compatible program that records the
// mail). A revision that fails its checks is notified started and halted
// exactly once cluster-wide, on every receiver; the next commit's started
// and completed likewise; and the receivers that hang or fail do not hold
// up the rollout (each try is bounded by notify.timeout, off the rollout's
// path).
func TestClusterNotifiesOncePerEvent(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	hang := make(chan struct{})
	jsonHook := newReceiver(t, 200, nil)
	slackHook := newReceiver(t, 200, nil)
	hung := newReceiver(t, 200, hang)
	t.Cleanup(func() { close(hang) }) // before the servers close
	failing := newReceiver(t, 500, nil)
	mailDir := testsvc.WorldDir(t, "mail")
	sendmail := filepath.Join(mailDir, "sendmail")
	if err := os.WriteFile(sendmail, []byte("#!/bin/sh\necho \"$@\" > \""+mailDir+"/args\"\ncat > \""+mailDir+"/mail.$$\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	section := clusterSection(r.Addr) + fmt.Sprintf(`notify:
  timeout: 500ms
  webhooks:
    - {url: %s/hook}
    - {url: %s/services/T0/B0/secret, format: slack}
    - {url: %s/hang}
    - {url: %s/fail}
  email: {sendmail: %s, from: drover@lab, to: [ops@lab]}
`, jsonHook.URL, slackHook.URL, hung.URL, failing.URL, sendmail)
	tc := newTestCluster(t, 3, section, cluster.Config{Addrs: []string{r.Addr}})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)

	bad := tc.commit("blog bad", "/missing.html")
	runCLI(t, "sync", "--config", tc.nodes[0].config)
	deadline := time.Now().Add(time.Minute)
	for count(jsonHook.events(t), "halted:"+bad+":"+a) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no halt notified: %+v", jsonHook.events(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	tc.waitAll(a, time.Minute)
	c := tc.commit("blog C", "/")
	runCLI(t, "sync", "--config", tc.nodes[0].config)
	tc.waitAll(c, 2*time.Minute)
	time.Sleep(2 * time.Second) // any duplicate would have arrived by now

	es := jsonHook.events(t)
	for _, id := range []string{"started:" + bad + ":" + a, "halted:" + bad + ":" + a, "started:" + c + ":" + a, "completed:" + c + ":" + a} {
		if got := count(es, id); got != 1 {
			t.Errorf("%d notifications %s at the JSON webhook, want exactly 1: %+v", got, id, es)
		}
	}
	if got := count(es, "completed:"+bad+":"+a); got != 0 {
		t.Errorf("the halted revision was notified completed")
	}
	for _, e := range es {
		if e.ID == "halted:"+bad+":"+a && (e.Kind != notify.KindHalted || e.Node == "" || !strings.Contains(e.Error, "health") || e.Cluster != "test" || e.Revision != bad) {
			t.Errorf("halt notification lacks the node, error or revision: %+v", e)
		}
		if e.ID == "completed:"+c+":"+a && (e.Duration <= 0 || e.Duration > 120) {
			t.Errorf("completed notification's duration %v s", e.Duration)
		}
	}
	slackHook.mu.Lock()
	halts := 0
	for _, b := range slackHook.bodies {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 {
			t.Errorf("Slack payload %s is not {\"text\": …}", b)
		}
		if text, _ := m["text"].(string); strings.Contains(text, "halted") && strings.Contains(text, bad[:12]) {
			halts++
		}
	}
	slackHook.mu.Unlock()
	if halts != 1 {
		t.Errorf("%d Slack messages for the halt, want 1", halts)
	}
	mails, _ := filepath.Glob(filepath.Join(mailDir, "mail.*"))
	mailHalts := 0
	for _, m := range mails {
		b, _ := os.ReadFile(m)
		if strings.Contains(string(b), "Subject: [drover test] rollout of "+bad[:12]+" halted") && strings.Contains(string(b), "To: ops@lab") {
			mailHalts++
		}
	}
	if mailHalts != 1 {
		t.Errorf("%d mails for the halt, want 1 (of %d mails)", mailHalts, len(mails))
	}
	if args, _ := os.ReadFile(filepath.Join(mailDir, "args")); strings.TrimSpace(string(args)) != "-t -i" {
		t.Errorf("sendmail called with %q, want -t -i", args)
	}
	failing.mu.Lock()
	tries := len(failing.bodies)
	failing.mu.Unlock()
	if tries < 5 { // at least 4 events, retried
		t.Errorf("the failing receiver got %d requests: no retries", tries)
	}
	// The hung and failing receivers cost the rollout nothing: each node's
	// drained window for C is its switch, checks and 1 s soak.
	for _, w := range tc.checkCapacity(1) {
		if strings.HasPrefix(c, w.rev) && w.to.Sub(w.from) > 3*time.Second {
			t.Errorf("%s was drained %s for C: the notifiers held it up", w.node, w.to.Sub(w.from))
		}
	}
}

package health

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTCPCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	c := Check{Name: "check db", TCP: addr, Timeout: time.Second}
	if err := c.Probe(t.Context()); err != nil {
		t.Fatalf("listening %s: %v", addr, err)
	}
	ln.Close()
	err = c.Probe(t.Context())
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed %s: %v, want connection refused", addr, err)
	}
	if err := Wait(ctxTimeout(t, 500*time.Millisecond), []Check{c}); err == nil || !strings.Contains(err.Error(), "check db (tcp "+addr+")") {
		t.Fatalf("Wait error %v does not name the check and its target", err)
	}
}

func TestExecCheck(t *testing.T) {
	ok := Check{Name: "check true", Exec: &Program{Argv: []string{"/bin/true"}}}
	if err := ok.Probe(t.Context()); err != nil {
		t.Fatal(err)
	}
	bad := Check{Name: "check false", Exec: &Program{Argv: []string{"/bin/sh", "-c", "echo disk full; exit 3"}}}
	if err := bad.Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "3") {
		t.Fatalf("failing program: %v, want its exit status and output", err)
	}
	slow := Check{Name: "check slow", Exec: &Program{Argv: []string{"/bin/sleep", "5"}}, Timeout: 200 * time.Millisecond}
	start := time.Now()
	if err := slow.Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow program: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a 200ms timeout took %s", d)
	}
}

// A config repo must not run code as root through a check.
func TestExecCheckRunsAsNobodyUnderRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a root agent drops privileges for checks")
	}
	c := Check{Name: "check who", Exec: &Program{Argv: []string{"/bin/sh", "-c", `test "$(id -u)" = 65534 && test -z "$HOME"`}}}
	if err := c.Probe(t.Context()); err != nil {
		t.Fatalf("the check did not run as nobody with an empty environment: %v", err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// A Prober reuses its connection from one attempt to the next, and an
// attempt after the target restarted (its old connection gone) succeeds.
func TestProberKeepsConnections(t *testing.T) {
	var conns atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) *http.Server {
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte(strings.Repeat("page ", 2000))) // bigger than what Once keeps
			}),
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			},
		}
		go srv.Serve(ln)
		return srv
	}
	srv := serve(ln)
	p := NewProber()
	defer p.Close()
	c := Check{Name: "site", URL: "http://" + addr + "/", Timeout: time.Second}
	for range 10 {
		if err := p.Probe(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("10 attempts opened %d connections, want 1", n)
	}
	// The target restarts: the kept connection is dead.
	srv.Close()
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv = serve(ln)
	defer srv.Close()
	if err := p.Probe(t.Context(), c); err != nil {
		t.Fatalf("first attempt after a restart: %v", err)
	}
}

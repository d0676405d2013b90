package webhook

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// serve runs h behind NewServer on a LimitListener of a loopback port.
func serve(t *testing.T, h http.Handler, cfg ServerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	srv := NewServer(h, cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(LimitListener(ln, cfg.MaxConns))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestSlowBodyIsCut: a client that trickles its body (one byte every
// 200 ms) is cut at the body bound, and its request has no effect; the
// agent's own bound is within the 10-15 s the issue asks.
func TestSlowBodyIsCut(t *testing.T) {
	if d := NewServer(nil, ServerConfig{}).ReadTimeout; d < 10*time.Second || d > 15*time.Second {
		t.Fatalf("the receiver's default body bound is %s, want 10-15 s", d)
	}
	rec := &recorder{}
	h := newHandler(t, Config{}, rec.trigger)
	addr := serve(t, h, ServerConfig{BodyTimeout: time.Second})

	p := providers[0]
	body := p.push("main")
	hdr := p.headers("push", "slow-1")
	p.sign(hdr, secret, body)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", len(body))
	for k, v := range hdr {
		fmt.Fprintf(c, "%s: %s\r\n", k, v[0])
	}
	io.WriteString(c, "\r\n")
	start := time.Now()
	cut := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, c) // returns when the server closes the connection
		cut <- time.Since(start)
	}()
	for i := 0; i < len(body); i++ {
		if _, err := c.Write(body[i : i+1]); err != nil {
			break
		}
		select {
		case took := <-cut:
			if took > 2*time.Second {
				t.Fatalf("the slow body was cut after %s, want about 1 s", took)
			}
			if rec.calls() != 0 {
				t.Fatal("a cut request triggered a sync")
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("a body trickled over %s was never cut", time.Since(start))
}

// TestConnectionsAreCapped: with the cap held by idle connections, another
// client is not served until one of them goes.
func TestConnectionsAreCapped(t *testing.T) {
	rec := &recorder{}
	h := newHandler(t, Config{}, rec.trigger)
	addr := serve(t, h, ServerConfig{MaxConns: 2, HeaderTimeout: time.Minute, BodyTimeout: time.Minute})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /hooks HTTP/1.1\r\nHost: x\r\n") // and nothing more
		held = append(held, c)
	}
	c, err := net.Dial("tcp", addr) // the kernel accepts it; drover does not serve it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /hooks HTTP/1.1\r\nHost: x\r\n\r\n")
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		answered <- line
	}()
	select {
	case line := <-answered:
		t.Fatalf("a third connection was served past a cap of 2: %q", line)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case line := <-answered:
		if !strings.Contains(line, "405") {
			t.Fatalf("the waiting client got %q, want 405 (GET)", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting client was not served once a connection closed")
	}
}

// TestRefusedWarningsAreRateLimited: a flood of forged deliveries writes
// at most the burst of WARN lines a minute, and the first line after says
// how many were left out; refusals are still refused.
func TestRefusedWarningsAreRateLimited(t *testing.T) {
	var logs testsvc.LogBuffer
	rec := &recorder{}
	h := newHandler(t, Config{Log: slog.New(slog.NewTextHandler(&logs, nil))}, rec.trigger)
	now := time.Unix(1_000_000, 0)
	h.refused.now = func() time.Time { return now }
	p := providers[0]
	body := p.push("main")
	forged := p.headers("push", "x")
	p.sign(forged, "not the secret", body)
	for range 200 {
		if w := post(h, forged, body); w.Code != http.StatusUnauthorized {
			t.Fatalf("a forged delivery got %d", w.Code)
		}
	}
	if n := strings.Count(logs.String(), "webhook refused"); n != warnBurst {
		t.Fatalf("200 forged deliveries wrote %d WARN lines, want %d\n%s", n, warnBurst, logs.String())
	}
	now = now.Add(warnPeriod)
	post(h, forged, body)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "webhook refused") || !strings.Contains(last, fmt.Sprintf("suppressed=%d", 200-warnBurst)) {
		t.Fatalf("the line after the quiet minute: %q, want suppressed=%d", last, 200-warnBurst)
	}
	if rec.calls() != 0 {
		t.Fatal("a forged delivery triggered a sync")
	}
}

package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

func TestValidateNamesEveryBadField(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want []string // fields named, in order
	}{
		{"empty driver", Config{}, []string{"lb.driver"}},
		{"unknown driver", Config{Driver: "f5"}, []string{"lb.driver"}},
		{"none needs nothing", Config{Driver: DriverNone}, nil},
		{"healthcheck", Config{Driver: DriverHealthCheck, StatusURL: "ftp://x"},
			[]string{"lb.drainTimeout", "lb.statusURL", "lb.healthCheck.dir", "lb.healthcheck.interval", "lb.healthcheck.unhealthyThreshold", "lb.healthcheck.healthyThreshold"}},
		{"haproxy", Config{Driver: DriverHAProxy, DrainTimeout: time.Second, HAProxy: HAProxyConfig{Backend: "a/b", Server: "s 1"}},
			[]string{"lb.haproxy.socket", "lb.haproxy.backend", "lb.haproxy.server"}},
		{"digitalocean", Config{Driver: DriverDigitalOcean, DrainTimeout: time.Second, DigitalOcean: DOConfig{APIURL: "api.digitalocean.com", DropletID: -1}},
			[]string{"lb.statusURL", "lb.digitalocean.loadBalancerID", "lb.digitalocean.tokenFile", "lb.digitalocean.apiURL", "lb.digitalocean.dropletID"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			var got []string
			for _, e := range unjoin(err) {
				var fe *spec.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is not a *spec.FieldError", e)
				}
				got = append(got, strings.SplitN(e.Error(), ":", 2)[0])
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("fields %v, want %v (error: %v)", got, c.want, err)
			}
			if _, nerr := New(c.cfg, nil); (nerr == nil) != (err == nil) {
				t.Errorf("New: %v, Validate: %v", nerr, err)
			}
		})
	}
	d, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := d.Drained(context.Background()); out || err != nil {
		t.Errorf("none driver: Drained = %v, %v", out, err)
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func TestNewDigitalOceanNeedsAToken(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "token")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for file, want := range map[string]string{"/nonexistent/token": "no such file", empty: "is empty"} {
		_, err := New(Config{Driver: DriverDigitalOcean, DrainTimeout: time.Second, StatusURL: "http://127.0.0.1:1/s",
			DigitalOcean: DOConfig{LoadBalancerID: "x", TokenFile: file}}, nil)
		if err == nil || !strings.Contains(err.Error(), "lb.digitalocean.tokenFile") || !strings.Contains(err.Error(), want) {
			t.Errorf("token file %s: %v", file, err)
		}
	}
}

func TestParseStubStatus(t *testing.T) {
	s, err := parseStubStatus("Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (stubStatus{291, 16630948, 16630948, 31070465, 6, 179, 106}); s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	if s.InFlight() != 184 {
		t.Errorf("in flight %d, want 6+179-1", s.InFlight())
	}
	for _, bad := range []string{"", "<html>404</html>", "Active connections: x \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n",
		"Active connections: 1 \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Sleeping: 0 \n"} {
		if _, err := parseStubStatus(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

// The real nginx's stub_status counts the status request itself in Writing,
// and a request in flight once more.
func TestInFlightFromRealNginx(t *testing.T) {
	t.Parallel()
	n := startNode(t, "node1", true)
	w := newInflightWaiter(n.statusURL)
	ctx := context.Background()
	s, err := w.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Writing != 1 || s.InFlight() != 0 {
		t.Fatalf("idle nginx: %+v, in flight %d", s, s.InFlight())
	}
	resp, err := http.Get("http://" + n.addr + "/slow.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if s, _ = w.read(ctx); s.InFlight() != 1 {
		t.Fatalf("one download: %+v, in flight %d", s, s.InFlight())
	}
	// The drain timeout passes with the download running: nil, a count.
	left, err := w.wait(ctx, 300*time.Millisecond, testLog(t))
	if err != nil || left != 1 {
		t.Fatalf("wait with a request in flight: %d left, %v", left, err)
	}
	go io.Copy(io.Discard, resp.Body)
	if left, err = w.wait(ctx, 5*time.Second, testLog(t)); err != nil || left != 0 {
		t.Fatalf("wait for the download to end: %d left, %v", left, err)
	}
	if _, err := newInflightWaiter("http://127.0.0.1:1/nginx_status").wait(ctx, 200*time.Millisecond, testLog(t)); err == nil ||
		!strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("unreachable status page: %v", err)
	}
}

// healthLog writes a health log at path in HealthLogFormat: line is one
// check answered off after t0, appendLog appends lines.
func healthLog(t *testing.T, path string, t0 time.Time) (line func(off time.Duration, status int, from string) string, appendLog func(string)) {
	line = func(off time.Duration, status int, from string) string {
		ts := t0.Add(off)
		return fmt.Sprintf("%d.%03d %d %s\n", ts.Unix(), ts.Nanosecond()/1e6, status, from)
	}
	appendLog = func(s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	return line, appendLog
}

func TestHealthWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "health.log")
	t0 := time.Unix(1_700_000_000, 0)
	line, appendLog := healthLog(t, path, t0)
	// A long history before the watch, with a 200 that must not count.
	appendLog(strings.Repeat(line(-time.Hour, 200, "10.0.0.9"), 20000))
	appendLog(line(-time.Second, 200, "10.0.0.1"))
	w, err := watchHealthLog(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.sources) != 0 || w.offset == 0 {
		t.Fatalf("lines before the start counted: %v", w.sources)
	}
	appendLog(line(10*time.Millisecond, 503, "10.0.0.1") + line(20*time.Millisecond, 200, "10.0.0.1") + "garbage\n")
	appendLog(line(30*time.Millisecond, 200, "10.0.0.1") + line(35*time.Millisecond, 200, "10.0.0.2")[:10]) // a half-written line
	if err := w.poll(); err != nil {
		t.Fatal(err)
	}
	if !w.healthy(2) || w.healthy(3) {
		t.Fatalf("after 503, 200, 200 from one checker: %v", w.answered(true))
	}
	appendLog(line(35*time.Millisecond, 200, "10.0.0.2")[10:])
	w.poll()
	if w.healthy(2) {
		t.Fatal("a second checker seen once counts as healthy twice")
	}
	appendLog(line(40*time.Millisecond, 200, "10.0.0.2"))
	w.poll()
	if !w.healthy(2) {
		t.Fatalf("both checkers twice: %v", w.answered(true))
	}
	// Rotation: a new file is read from its start.
	os.Rename(path, path+".1")
	appendLog(line(50*time.Millisecond, 503, "10.0.0.2"))
	w.poll()
	if w.healthy(1) || len(w.answered(false)) != 1 {
		t.Fatalf("after rotation and a 503: ok %v, bad %v", w.answered(true), w.answered(false))
	}
}

func TestParseMsec(t *testing.T) {
	for in, want := range map[string]time.Time{
		"1700000000.123": time.Unix(1_700_000_000, 123e6),
		"1700000000.1":   time.Unix(1_700_000_000, 100e6),
		"1700000000":     time.Unix(1_700_000_000, 0),
	} {
		if got, ok := parseMsec(in); !ok || !got.Equal(want) {
			t.Errorf("parseMsec(%q) = %v, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "x", "1.1234", "1.x"} {
		if _, ok := parseMsec(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

// TestSeenDown: the node is seen down once every checker got the
// threshold of non-200 answers in a row since the drain, including the
// regular checkers of just before it that have not checked since; one
// request from an address (a person's curl) does not make it a checker.
func TestSeenDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "health.log")
	t0 := time.Unix(1_700_000_000, 0)
	line, appendLog := healthLog(t, path, t0)
	appendLog(line(-3*time.Hour, 200, "10.0.0.9") + line(-3*time.Hour, 200, "10.0.0.9")) // long gone
	appendLog(line(-2*time.Second, 200, "10.0.0.1") + line(-time.Second, 200, "10.0.0.1"))
	appendLog(line(-2*time.Second, 200, "10.0.0.2") + line(-time.Second, 200, "10.0.0.2"))
	appendLog(line(-time.Second, 200, "127.0.0.1")) // one curl
	w, err := watchHealthLogKnown(path, t0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if w.regulars() != 2 {
		t.Fatalf("regular checkers %v, want 10.0.0.1 and 10.0.0.2", w.known)
	}
	appendLog(line(100*time.Millisecond, 503, "10.0.0.1") + line(300*time.Millisecond, 503, "10.0.0.1"))
	w.poll()
	if w.seenDown(2) {
		t.Fatal("seen down while 10.0.0.2, a checker of just before, has not checked since")
	}
	appendLog(line(200*time.Millisecond, 503, "10.0.0.2"))
	w.poll()
	if w.seenDown(2) {
		t.Fatal("seen down after one 503 to 10.0.0.2")
	}
	appendLog(line(400*time.Millisecond, 503, "10.0.0.2"))
	w.poll()
	if !w.seenDown(2) {
		t.Fatalf("not seen down after two 503s to each checker: %v", w.answered(false))
	}
	if w.lines != 11 {
		t.Fatalf("counted %d lines, want 11 (every health request, for the quiet rule)", w.lines)
	}
}

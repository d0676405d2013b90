package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// TestCheckHAProxy: Check finds this node's server in a real HAProxy, says
// whether it is in rotation, and names what is missing otherwise.
func TestCheckHAProxy(t *testing.T) {
	t.Parallel()
	n := startNode(t, "node1", true)
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), "", n))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := func(backend, server string) Config {
		return Config{Driver: DriverHAProxy, DrainTimeout: time.Second, HAProxy: HAProxyConfig{Socket: h.Socket, Backend: backend, Server: server}}
	}
	got, err := Check(ctx, cfg("web", "node1"))
	if err != nil || !strings.Contains(got.Detail, "web/node1 (in rotation)") || got.Target != nil {
		t.Errorf("Check = %+v, %v", got, err)
	}
	if _, err := h.Runtime(ctx, "set server web/node1 state drain"); err != nil {
		t.Fatal(err)
	}
	if got, err := Check(ctx, cfg("web", "node1")); err != nil || !strings.Contains(got.Detail, "(drained)") {
		t.Errorf("Check of a drained server = %+v, %v", got, err)
	}
	for server, want := range map[string]string{"node9": `no server "node9" in backend "web"`} {
		if _, err := Check(ctx, cfg("web", server)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%s) = %v, want %q", server, err, want)
		}
	}
	if _, err := Check(ctx, cfg("api", "node1")); err == nil || !strings.Contains(err.Error(), "Can't find backend") {
		t.Errorf("Check of an unknown backend = %v", err)
	}
}

// TestCheckDigitalOcean: Check reads the LB (no change: only GETs reach the
// API), finds this droplet in it or says it is not (ErrNotInRotation, for a
// warning), and names the token file when the API refuses the token.
func TestCheckDigitalOcean(t *testing.T) {
	t.Parallel()
	for _, tag := range []string{"", "web"} {
		f, _, cfg := doSetup(t, tag, false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		want := HealthTarget{Protocol: "http", Port: 80, Path: "/healthz"} // the fake LB's
		got, err := Check(ctx, cfg)
		if err != nil || !strings.Contains(got.Detail, fmt.Sprint(f.droplt)) || !strings.Contains(got.Detail, "every 10s") ||
			got.Target == nil || *got.Target != want {
			t.Errorf("tag %q: Check = %+v, %v", tag, got, err)
		}
		f.setMembers(3164445)
		if got, err := Check(ctx, cfg); !errors.Is(err, ErrNotInRotation) || got.Target == nil || *got.Target != want {
			t.Errorf("tag %q: Check with the droplet out = %+v, %v, want ErrNotInRotation and the LB's health check", tag, got, err)
		}
		f.injectN(1, http.MethodGet, "/v2/load_balancers/"+f.lbID, http.StatusUnauthorized, nil, `{"id":"unauthorized","message":"Unable to authenticate you"}`)
		if _, err := Check(ctx, cfg); err == nil || !strings.Contains(err.Error(), "refused the token") || !strings.Contains(err.Error(), cfg.DigitalOcean.TokenFile) {
			t.Errorf("tag %q: Check with a refused token = %v", tag, err)
		}
		cancel()
		for _, c := range f.callLog() {
			if !strings.HasPrefix(c, "GET ") {
				t.Errorf("tag %q: Check sent %s", tag, c)
			}
		}
		if !slices.Contains(f.callLog(), "GET /v2/load_balancers/"+f.lbID) {
			t.Errorf("tag %q: Check never read the LB: %v", tag, f.callLog())
		}
	}
}

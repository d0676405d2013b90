package nginxconf

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/drover-dev/drover/internal/testsvc"
)

// TestUpstreamsFollowTheWorkersRange: nginx's upstreams are the ports of
// the worker as given, so the overlap handover's flip is a render of the
// worker on its second range (spec.Worker.OnAlt) and a reload: a real
// nginx then sends every request to the new range, with no request lost
// by the reload.
func TestUpstreamsFollowTheWorkersRange(t *testing.T) {
	port, alt := testsvc.FreePort(t), testsvc.FreePort(t)
	yaml := appYAML + fmt.Sprintf(`
rollout: {handover: overlap}
workers:
  - name: api
    source: workers/api
    exec: [./api]
    port: %d
    altPort: %d
    health: {path: /healthz}
    routes: [{serverName: api.test, path: /}]
`, port, alt)
	w := newWorld(t, yaml, true, nil)
	backend(t, fmt.Sprintf("127.0.0.1:%d", port), func(rw http.ResponseWriter, r *http.Request) { fmt.Fprint(rw, "old range") })
	backend(t, fmt.Sprintf("127.0.0.1:%d", alt), func(rw http.ResponseWriter, r *http.Request) { fmt.Fprint(rw, "new range") })
	c := w.client(true, false)
	if resp, body := w.mustGet(c, "api.test", "/x"); resp.StatusCode != 200 || body != "old range" {
		t.Fatalf("before the flip: %d %q", resp.StatusCode, body)
	}

	flipped := *w.p.Spec
	flipped.Workers = append(flipped.Workers[:0:0], flipped.Workers[0].OnAlt())
	p := w.p
	p.Spec = &flipped
	ctx := context.Background()
	if _, err := w.n.Install(ctx, w.render(p)); err != nil {
		t.Fatal(err)
	}
	if err := w.n.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if resp, body := w.mustGet(c, "api.test", fmt.Sprintf("/x/%d", i)); resp.StatusCode != 200 || body != "new range" {
			t.Fatalf("request %d after the flip: %d %q, want the new range", i, resp.StatusCode, body)
		}
	}
}

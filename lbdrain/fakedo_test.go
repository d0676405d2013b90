package lbdrain

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDO speaks the subset of the DigitalOcean API that the driver uses, as
// documented (docs.digitalocean.com/reference/api), and checks every request
// field by field; it also serves the droplet metadata service, and behaves as
// the load balancer does: while the droplet is a member, it health-checks
// the node every check interval, from each of its checker addresses.
type fakeDO struct {
	t      *testing.T
	srv    *httptest.Server
	token  string
	lbID   string
	tag    string // "" for a load balancer with a droplet list
	droplt int
	hc     map[string]int // the LB's health_check settings
	unit   time.Duration  // one second of the LB's settings

	mu       sync.Mutex
	members  []int                // droplet_ids, or the droplets carrying tag
	inject   []injection          // failures for the next matching requests
	calls    []string             // every API request, "METHOD path"
	failures int                  // injected failures answered
	polls    []poll               // health checks made
	inflight map[string]time.Time // checker -> start of its check in flight
	slept    []time.Duration      // the driver's retry waits
}

type injection struct {
	method, path string
	status       int
	header       map[string]string
	body         string
}

type poll struct {
	at     time.Time
	from   string
	status int
}

const (
	bodyBusy = `{"id":"forbidden","message":"Load Balancer can't be updated while it processes previous actions","request_id":"18fd3084-8660-4f17-9d24-957cc014b1cc"}`
	bodyRate = `{"id":"too_many_requests","message":"API Rate limit exceeded."}`
	body503  = `{"id":"service_unavailable","message":"Service Unavailable"}`
	bodyDeny = `{"id":"forbidden","message":"You do not have access for the attempted action."}`
)

// startFakeDO serves an LB holding droplet (a member at start), checking
// healthURL from the given checker addresses (127.0.0.x).
func startFakeDO(t *testing.T, tag string, healthURL string, checkers ...string) *fakeDO {
	f := &fakeDO{
		t: t, token: "dop_v1_test", lbID: "4de7ac8b-495b-4884-9a69-1050c6793cd6", tag: tag, droplt: 3164444,
		hc:      map[string]int{"check_interval_seconds": 10, "response_timeout_seconds": 5, "unhealthy_threshold": 3, "healthy_threshold": 5},
		unit:    20 * time.Millisecond,
		members: []int{3164445, 3164444}, inflight: map[string]time.Time{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	if healthURL != "" {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, from := range checkers {
			wg.Add(1)
			go func() { defer wg.Done(); f.checkLoop(ctx, healthURL, from) }()
		}
		t.Cleanup(func() { cancel(); wg.Wait() })
	}
	return f
}

func (f *fakeDO) member() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.members, f.droplt)
}

// checkLoop is one of the LB's checkers: every interval it GETs the health
// URL of a member droplet from its own address.
func (f *fakeDO) checkLoop(ctx context.Context, url, from string) {
	c := &http.Client{Timeout: time.Duration(f.hc["response_timeout_seconds"]) * f.unit, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext,
	}}
	tick := time.NewTicker(time.Duration(f.hc["check_interval_seconds"]) * f.unit)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !f.member() {
			continue
		}
		p := poll{at: time.Now(), from: from}
		f.mu.Lock()
		f.inflight[from] = p.at
		f.mu.Unlock()
		if resp, err := c.Get(url); err == nil {
			p.status = resp.StatusCode
			resp.Body.Close()
		}
		f.mu.Lock()
		f.polls = append(f.polls, p)
		delete(f.inflight, from)
		f.mu.Unlock()
	}
}

// okPollsSince counts health checks answered 200 that started after t
// and before now, per checker. nginx logs an answer before the checker has
// read it, so a check still in flight is waited for: the driver may have
// counted it already.
func (f *fakeDO) okPollsSince(t time.Time) map[string]int {
	until := time.Now()
	for deadline := until.Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		busy := false
		for _, at := range f.inflight {
			busy = busy || !at.After(until)
		}
		f.mu.Unlock()
		if !busy {
			break
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := map[string]int{}
	for _, p := range f.polls {
		if p.at.After(t) && !p.at.After(until) && p.status == 200 {
			n[p.from]++
		}
	}
	return n
}

func (f *fakeDO) injectN(n int, method, path string, status int, header map[string]string, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.inject = append(f.inject, injection{method, path, status, header, body})
	}
}

func (f *fakeDO) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeDO) setMembers(ids ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = ids
}

func (f *fakeDO) apiError(w http.ResponseWriter, status int, id, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"id":%q,"message":%q}`, id, msg)
}

func (f *fakeDO) serve(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.URL.Path == "/metadata/v1/id" {
		if r.Method != http.MethodGet || r.Header.Get("Authorization") != "" {
			t.Errorf("metadata: %s with Authorization %q: want a plain GET (the API token must not leave for the metadata service)", r.Method, r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, f.droplt)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	var inj *injection
	for i, in := range f.inject {
		if in.method == r.Method && in.path == r.URL.Path {
			inj = &in
			f.inject = slices.Delete(f.inject, i, i+1)
			f.failures++
			break
		}
	}
	f.mu.Unlock()
	if got := r.Header.Get("Authorization"); got != "Bearer "+f.token {
		t.Errorf("%s %s: Authorization %q, want the bearer token", r.Method, r.URL.Path, got)
		f.apiError(w, http.StatusUnauthorized, "unauthorized", "Unable to authenticate you.")
		return
	}
	if got := r.Header.Get("Accept"); got != "application/json" {
		t.Errorf("%s %s: Accept %q", r.Method, r.URL.Path, got)
	}
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(r.Body)
	if inj != nil {
		for k, v := range inj.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(inj.status)
		fmt.Fprint(w, inj.body)
		return
	}
	lbPath, dropletsPath := "/v2/load_balancers/"+f.lbID, "/v2/load_balancers/"+f.lbID+"/droplets"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == lbPath:
		if body.Len() != 0 {
			t.Errorf("GET %s has a body: %q", r.URL.Path, body)
		}
		f.getLB(w)
	case (r.Method == http.MethodPost || r.Method == http.MethodDelete) && r.URL.Path == dropletsPath:
		if f.tag != "" {
			// The API refuses droplet lists on a tag-based LB.
			t.Errorf("%s %s on a load balancer that selects droplets by tag", r.Method, r.URL.Path)
			f.apiError(w, http.StatusUnprocessableEntity, "unprocessable_entity", "Load Balancer uses a tag; droplets cannot be added directly.")
			return
		}
		var req struct {
			DropletIDs []int `json:"droplet_ids"`
		}
		if !f.decode(w, r, body.Bytes(), &req) {
			return
		}
		if !reflect.DeepEqual(req.DropletIDs, []int{f.droplt}) {
			t.Errorf("%s %s: droplet_ids %v, want [%d]", r.Method, r.URL.Path, req.DropletIDs, f.droplt)
		}
		f.change(r.Method == http.MethodPost)
		w.WriteHeader(http.StatusNoContent)
	case (r.Method == http.MethodPost || r.Method == http.MethodDelete) && strings.HasPrefix(r.URL.Path, "/v2/tags/") && strings.HasSuffix(r.URL.Path, "/resources"):
		if tag := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v2/tags/"), "/resources"); tag != f.tag || f.tag == "" {
			t.Errorf("%s %s: tag %q, want the LB's tag %q", r.Method, r.URL.Path, tag, f.tag)
		}
		var req struct {
			Resources []struct {
				ID   string `json:"resource_id"`
				Type string `json:"resource_type"`
			} `json:"resources"`
		}
		if !f.decode(w, r, body.Bytes(), &req) {
			return
		}
		if len(req.Resources) != 1 || req.Resources[0].ID != strconv.Itoa(f.droplt) || req.Resources[0].Type != "droplet" {
			t.Errorf("%s %s: resources %+v, want one droplet %d", r.Method, r.URL.Path, req.Resources, f.droplt)
		}
		f.change(r.Method == http.MethodPost)
		w.WriteHeader(http.StatusNoContent)
	default:
		t.Errorf("unexpected API request %s %s", r.Method, r.URL.Path)
		f.apiError(w, http.StatusNotFound, "not_found", "The resource you were accessing could not be found.")
	}
}

// decode checks the Content-Type and decodes the JSON body strictly.
func (f *fakeDO) decode(w http.ResponseWriter, r *http.Request, body []byte, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("%s %s: Content-Type %q, want application/json", r.Method, r.URL.Path, ct)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.t.Errorf("%s %s: body %q: %v", r.Method, r.URL.Path, body, err)
		f.apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return false
	}
	return true
}

func (f *fakeDO) change(add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = slices.DeleteFunc(f.members, func(id int) bool { return id == f.droplt })
	if add {
		f.members = append(f.members, f.droplt)
	}
}

func (f *fakeDO) getLB(w http.ResponseWriter) {
	f.mu.Lock()
	lb := map[string]any{
		"id": f.lbID, "name": "example-lb-01", "ip": "104.131.186.241", "size_unit": 3, "size": "lb-small",
		"algorithm": "round_robin", "status": "active", "created_at": "2017-02-01T22:22:58Z",
		"forwarding_rules": []map[string]any{{"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}},
		"health_check": map[string]any{
			"protocol": "http", "port": 80, "path": "/healthz",
			"check_interval_seconds": f.hc["check_interval_seconds"], "response_timeout_seconds": f.hc["response_timeout_seconds"],
			"healthy_threshold": f.hc["healthy_threshold"], "unhealthy_threshold": f.hc["unhealthy_threshold"],
		},
		"sticky_sessions":        map[string]any{"type": "none"},
		"region":                 map[string]any{"slug": "nyc3", "name": "New York 3"},
		"tag":                    f.tag,
		"droplet_ids":            slices.Clone(f.members),
		"redirect_http_to_https": false, "enable_proxy_protocol": false, "enable_backend_keepalive": false,
		"vpc_uuid": "c33931f2-a26a-4e61-b85c-4e95a2ec431b",
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("RateLimit-Limit", "5000")
	w.Header().Set("RateLimit-Remaining", "4816")
	w.Header().Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
	_ = json.NewEncoder(w).Encode(map[string]any{"load_balancer": lb})
}

package traffic

import (
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

func TestParseLine(t *testing.T) {
	cases := []struct {
		line string
		ok   bool
		want Entry
	}{
		{"1796172107.764|404|0.000|-|app.test|-", true,
			Entry{Time: time.UnixMilli(1796172107764), Status: 404, Site: "app.test"}},
		{"1796172107.5|502|0.120|0.010, 0.100|app.test|127.0.0.1:3000, 127.0.0.1:3001", true,
			Entry{Time: time.UnixMilli(1796172107500), Status: 502, Latency: 110 * time.Millisecond, Site: "app.test", Upstream: "127.0.0.1:3001"}},
		{"1796172107|200|2.500|-|app.test|-\n", true, Entry{Time: time.Unix(1796172107, 0), Status: 200, Latency: 2500 * time.Millisecond, Site: "app.test"}},
		{"1796172107.000|502|0.001|-|app.test|drover_api", true, Entry{Time: time.Unix(1796172107, 0), Status: 502, Latency: time.Millisecond, Site: "app.test", Upstream: "drover_api"}},
		{"1796172107.000|200|0.001|0.001 : 0.002|app.test|127.0.0.1:3000 : 127.0.0.1:4000", true,
			Entry{Time: time.Unix(1796172107, 0), Status: 200, Latency: 3 * time.Millisecond, Site: "app.test", Upstream: "127.0.0.1:4000"}},
		{"", false, Entry{}},
		{"<190>Dec  2 00:41:47 drover: 1796172107.764|404|0.000|-|app.test|-", false, Entry{}},
		{"1796172107.764|404|0.000|-|app.test", false, Entry{}},
		{"1796172107.764|4o4|0.000|-|app.test|-", false, Entry{}},
		{"1796172107.764|42|0.000|-|app.test|-", false, Entry{}},
		{"-5.0|200|0.000|-|app.test|-", false, Entry{}},
		{"1796172107.76432|200|0.000|-|app.test|-", false, Entry{}},
		{"1796172107.764|200|x|-|app.test|-", false, Entry{}},
		{"1796172107.764|200|0.1|-|" + strings.Repeat("a", MaxLine) + "|-", false, Entry{}},
	}
	for _, c := range cases {
		got, ok := ParseLine([]byte(c.line))
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("ParseLine(%.60q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

func TestHistogramQuantileNeverBetterThanTruth(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 {
		t.Fatal("empty histogram has a p99")
	}
	for i := range 1000 {
		h.Add(time.Duration(i+1) * time.Millisecond) // 1 ms … 1 s
	}
	p99 := h.Quantile(0.99)
	if p99 < 990*time.Millisecond || p99 > 990*time.Millisecond*119/100 {
		t.Fatalf("p99 of 1..1000 ms = %s, want within one bucket above 990ms", p99)
	}
	h = Histogram{}
	h.Add(time.Hour)
	if h.Quantile(0.5) < time.Hour {
		t.Fatalf("an hour-long request reads as %s", h.Quantile(0.5))
	}
	for i := range Buckets - 1 {
		if d := bucketUpper(i); bucketOf(d) != i {
			t.Fatalf("bucket %d's upper bound %s falls in bucket %d", i, d, bucketOf(d))
		}
	}
}

func targets(t testing.TB) *Targets {
	s, err := spec.Parse("drover.yaml", []byte(`version: 1
sites: [{name: app, serverNames: [app.test, www.app.test], source: s}]
workers: [{name: api, source: w, exec: [x], port: 3000, instances: 2, health: {path: /h}, routes: [{serverName: app.test, path: /api/}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	return TargetsOf(s)
}

func TestCounterMinutesAndTargets(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	c := NewCounter(targets(t))
	c.Reset("r1", nil, t0)
	add := func(at time.Duration, status int, site, up string) {
		c.Add(Entry{Time: t0.Add(at), Status: status, Latency: 10 * time.Millisecond, Site: site, Upstream: up})
	}
	add(-time.Second, 500, "app.test", "")                   // before the revision
	add(0, 200, "www.app.test", "")                          // site
	add(time.Second, 503, "app.test", "")                    // site, nginx's own 5xx
	add(2*time.Second, 404, "app.test", "")                  // not an error
	add(70*time.Second, 500, "app.test", "127.0.0.1:3001")   // worker, next minute
	add(80*time.Second, 502, "app.test", "drover_api")       // worker, no instance tried
	add(90*time.Second, 500, "hooks.test", "127.0.0.1:9999") // webhook: nobody's
	c.AddLine([]byte("garbage"))

	f := c.Figures(t0.Add(-time.Hour), t0.Add(2*time.Minute))
	if f.Total != (Counts{Requests: 5, Errors: 3}) || f.Targets["site:app"].Counts != (Counts{3, 1}) ||
		f.Targets["worker:api"].Counts != (Counts{2, 2}) || f.Malformed != 1 || f.Ignored != 2 || f.Rev != "r1" {
		t.Fatalf("figures %+v", f)
	}
	if !f.From.Equal(t0) {
		t.Fatalf("from %s, want the revision's start", f.From)
	}
	if f := c.Figures(t0.Add(time.Minute), t0.Add(2*time.Minute)); f.Total != (Counts{2, 2}) {
		t.Fatalf("second minute %+v", f.Total)
	}
	// Minutes+1 minutes later the first minute's bucket is reused.
	add(time.Duration(Minutes)*time.Minute, 200, "app.test", "")
	if f := c.Figures(t0, t0.Add(time.Duration(Minutes)*time.Minute)); f.Targets["site:app"].Counts != (Counts{1, 0}) {
		t.Fatalf("after %d minutes the site has %+v", Minutes, f.Targets["site:app"])
	}
	// A line older than the kept minutes does not reopen a bucket.
	add(0, 500, "app.test", "")
	if f := c.Figures(t0, t0.Add(time.Hour)); f.Targets["site:app"].Errors != 0 {
		t.Fatalf("a stale line was counted: %+v", f)
	}
	c.Reset("r2", nil, t0.Add(time.Hour))
	if f := c.Figures(t0, t0.Add(2*time.Hour)); f.Total.Requests != 0 || f.Rev != "r2" {
		t.Fatalf("reset kept %+v", f)
	}
}

func TestCounterMemoryIsBounded(t *testing.T) {
	c := NewCounter(targets(t))
	t0 := time.Now()
	c.Reset("r1", nil, t0)
	for i := range 10000 {
		c.Add(Entry{Time: t0, Status: 200, Site: "host" + string(rune('a'+i%26)) + ".test"})
		c.Add(Entry{Time: t0, Status: 200, Upstream: "10.0.0.1:" + string(rune('0'+i%10))})
	}
	if len(c.byTarget) != 0 {
		t.Fatalf("unknown hosts made %d targets", len(c.byTarget))
	}
}

func TestSnapshotMinutesAndBetween(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	c := NewCounter(targets(t))
	c.Reset("r1", nil, t0)
	for i := range 3 {
		for j := range 10 {
			st := 200
			if j == 0 {
				st = 500
			}
			c.Add(Entry{Time: t0.Add(time.Duration(i)*time.Minute + time.Duration(j)*time.Second), Status: st, Site: "app.test"})
		}
	}
	s := c.Snapshot("n1", t0.Add(2*time.Minute+30*time.Second))
	if s.Node != "n1" || s.Rev != "r1" || len(s.Minutes) != 3 || s.Minutes[0].Start != t0.Unix()/60 || s.Minutes[2].Counts != (Counts{10, 1}) {
		t.Fatalf("snapshot %+v", s)
	}
	if got := s.Between(t0.Add(time.Minute), t0.Add(2*time.Minute)); got != (Counts{20, 2}) {
		t.Fatalf("between %+v", got)
	}
	s.Minutes = make([]Minute, 1000)
	s.Bound()
	if len(s.Minutes) != Minutes {
		t.Fatalf("bound kept %d minutes", len(s.Minutes))
	}
}

package nginxconf

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/traffic"
)

// BenchmarkTrafficLogCost measures what the per-request log costs on a
// static file: three masters of the same nginx binary serve the same 4 KiB
// file over plain HTTP (TLS would hide the cost): "none" without a
// per-request log; "file", what drover renders (a buffered file,
// buffer=64k flush=1s, followed and counted by a traffic.Follower in this
// process, as the agent does); "syslog", the alternative measured (a syslog
// datagram per request to a unix socket read and counted in this process).
// Each round loads each master in turn for DROVER_BENCH_ROUND (1s) with 8
// keep-alive clients; b.N rounds. It reports the median throughput of each
// (the clients and the counting share the 2 CPUs with nginx, as the agent
// does on a node) and nginx's own CPU per request (utime+stime of its
// workers, from /proc).
//
//	go test -run '^$' -bench TrafficLogCost -benchtime 9x ./nginxconf/
func BenchmarkTrafficLogCost(b *testing.B) {
	round := time.Second
	if v := os.Getenv("DROVER_BENCH_ROUND"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		round = d
	}
	variants := []string{"none", "file", "syslog"}
	servers := map[string]*benchNginx{}
	for _, v := range variants {
		servers[v] = startBenchNginx(b, v)
	}
	rps := map[string][]float64{}
	cpu := map[string][]float64{}
	b.ResetTimer()
	for i := range b.N {
		// The order turns every round, so that a load rising or falling
		// on the shared machine does not favour one variant.
		for j := range variants {
			v := variants[(i+j)%len(variants)]
			r, c := servers[v].load(b, round)
			rps[v] = append(rps[v], r)
			cpu[v] = append(cpu[v], c)
		}
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(median(rps[v]), v+"-req/s")
		b.ReportMetric(median(cpu[v]), v+"-nginx-µs/req")
	}
	// Each round's ratio to "none" in the same round, then the median:
	// paired, so the machine's drift between rounds cancels.
	for _, v := range variants[1:] {
		var tput, cpus []float64
		for i := range rps[v] {
			tput = append(tput, 100*(1-rps[v][i]/rps["none"][i]))
			cpus = append(cpus, 100*(cpu[v][i]/cpu["none"][i]-1))
		}
		b.ReportMetric(median(tput), v+"-throughput-cost-%")
		b.ReportMetric(median(cpus), v+"-cpu-cost-%")
		b.Logf("%s throughput cost per round (%%): %.1f", v, tput)
	}
	time.Sleep(1500 * time.Millisecond) // the file's last flush, and a poll
	for _, v := range variants[1:] {
		s := servers[v]
		f := s.counter.Figures(time.Now().Add(-time.Hour), time.Now())
		b.Logf("%s: counted %d requests (%d malformed); clients got %d", v, f.Total.Requests, f.Malformed, s.sent.Load())
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

type benchNginx struct {
	addr    string
	pid     int
	counter *traffic.Counter
	sent    atomic.Int64
}

func startBenchNginx(b *testing.B, variant string) *benchNginx {
	dir := testsvc.WorldDir(b, "bench-"+variant)
	s := mustSpec(b, "sites: [{name: app, serverNames: [app.test], source: sites/app}]\n")
	site := filepath.Join(dir, "current", "sites", "app")
	for _, d := range []string{site, filepath.Join(dir, "health"), filepath.Join(dir, "tmp"), filepath.Join(dir, "conf")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte(strings.Repeat("drover ", 585)), 0o644); err != nil {
		b.Fatal(err)
	}
	p := Params{
		Spec: s, LiveDir: filepath.Join(dir, "current"), HealthDir: filepath.Join(dir, "health"),
		Listen: "127.0.0.1", HTTPSPort: testsvc.FreePort(b), HealthPort: testsvc.FreePort(b),
		User: "www-data", PIDFile: filepath.Join(dir, "nginx.pid"), ErrorLog: filepath.Join(dir, "error.log"),
		TempDir: filepath.Join(dir, "tmp"),
	}
	n := &benchNginx{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.HTTPSPort))}
	if variant != "none" {
		p.TrafficLog = filepath.Join(dir, "traffic.log")
		n.counter = traffic.NewCounter(traffic.TargetsOf(s))
		n.counter.Reset("bench", nil, time.Now())
	}
	conf, err := Render(p)
	if err != nil {
		b.Fatal(err)
	}
	switch variant {
	case "file":
		f := traffic.NewFollower(p.TrafficLog, n.counter, 0)
		f.Start(time.Second)
		b.Cleanup(f.Close)
	case "syslog":
		sock := filepath.Join(dir, "traffic.sock")
		file := fmt.Sprintf("%q drover_traffic buffer=64k flush=1s;", p.TrafficLog)
		syslog := fmt.Sprintf("%q drover_traffic;", "syslog:server=unix:"+sock+",nohostname,tag=drover")
		if !strings.Contains(string(conf), file) {
			b.Fatalf("no %s in\n%s", file, conf)
		}
		conf = []byte(strings.Replace(string(conf), file, syslog, 1))
		listenDatagrams(b, sock, n.counter)
	}
	cf := filepath.Join(dir, "conf", "nginx.conf")
	if err := os.WriteFile(cf, conf, 0o644); err != nil {
		b.Fatal(err)
	}
	ng := testsvc.StartNginx(b, dir, cf, n.addr)
	n.pid = ng.PID()
	return n
}

// load runs 8 keep-alive clients for d and returns requests per second and
// nginx's workers' CPU microseconds per request.
func (n *benchNginx) load(b *testing.B, d time.Duration) (float64, float64) {
	tr := &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := "http://" + n.addr + "/"
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cpu0 := n.workersCPU(b)
	start := time.Now()
	var done atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "app.test"
				resp, err := c.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	cpu := n.workersCPU(b) - cpu0
	n.sent.Add(done.Load())
	if done.Load() == 0 {
		b.Fatal("no request answered")
	}
	return float64(done.Load()) / el.Seconds(), float64(cpu.Microseconds()) / float64(done.Load())
}

// workersCPU sums utime+stime of the master's children (its workers).
func (n *benchNginx) workersCPU(b *testing.B) time.Duration {
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", n.pid, n.pid))
	if err != nil {
		b.Fatal(err)
	}
	var ticks int64
	for _, k := range strings.Fields(string(kids)) {
		st, err := os.ReadFile("/proc/" + k + "/stat")
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
}

// listenDatagrams counts the syslog datagrams sent to sock (the syslog
// variant), without their header.
func listenDatagrams(b *testing.B, sock string, c *traffic.Counter) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		b.Fatal(err)
	}
	_ = conn.SetReadBuffer(1 << 20)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			line := buf[:n]
			if i := bytes.Index(line, []byte(": ")); i >= 0 {
				line = line[i+2:]
			}
			c.AddLine(line)
		}
	})
	b.Cleanup(func() { conn.Close(); wg.Wait() })
}

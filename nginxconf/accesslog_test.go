package nginxconf

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenderTrafficLog keeps the per-request log in testdata/traffic.golden:
// the sites and routes log to the socket, the health, status and catch-all
// servers do not.
func TestRenderTrafficLog(t *testing.T) {
	p := goldenParams(mustSpec(t, workersYAML))
	p.StatusListen = "127.0.0.1:8099"
	p.TrafficLog = goldenRoot + "/traffic.log"
	got, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("testdata", "traffic.golden")
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./nginxconf -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered config differs from %s (run go test ./nginxconf -update and review the diff):\n%s", file, got)
	}
	if strings.Count(string(got), "access_log off;") != 3 || bytes.Contains(got, []byte("access_log off;\nlog_format drover_traffic")) {
		t.Errorf("want the traffic log on at http level and off in the 3 servers of nobody's:\n%s", got)
	}
	for _, bad := range []string{"relative.log", goldenRoot + "/../x.log", goldenRoot + "/a\";.log", goldenRoot + "/$x.log"} {
		p.TrafficLog = bad
		if _, err := Render(p); err == nil || !strings.Contains(err.Error(), "trafficLog") {
			t.Errorf("log %q: err %v", bad, err)
		}
	}
}

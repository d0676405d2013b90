package testsvc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNginxServes(t *testing.T) {
	dir := WorldDir(t, "nginx")
	port := FreePort(t)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("hi\n"), 0o644)
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid; error_log %[1]s/error.log;
events {}
http { access_log off; client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp; uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  server { listen 127.0.0.1:%[2]d; root %[1]s; } }
`, dir, port)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
	StartNginx(t, dir, filepath.Join(dir, "nginx.conf"), fmt.Sprintf("127.0.0.1:%d", port))
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hi\n" {
		t.Fatalf("got %q", b)
	}
}

func TestRedisAndHAProxyAndPostgresStart(t *testing.T) {
	r := StartRedis(t)
	h := StartHAProxy(t, fmt.Sprintf("defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\nlisten r\n    bind 127.0.0.1:%d\n    server r1 %s\n", FreePort(t), r.Addr))
	out, err := h.Runtime(context.Background(), "show servers state")
	if err != nil || !strings.Contains(out, "r1") {
		t.Fatalf("runtime API: %v %q", err, out)
	}
	pg := StartPostgres(t)
	if !strings.Contains(pg.DSN, "127.0.0.1") {
		t.Fatal(pg.DSN)
	}
}

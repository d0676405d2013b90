package spec

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestInitBuild: the LB driver follows from what was given, the HAProxy
// server defaults to the node's name, a secret's value becomes a file
// beside node.yaml and its path in node.yaml, a file stays where it is,
// and a secret node.yaml would not name is refused.
func TestInitBuild(t *testing.T) {
	dir := t.TempDir()
	in := NewInit()
	in.Name, in.Repo.URL = "web1", "https://git.example.com/x.git"
	in.LB.HAProxy.Socket, in.LB.HAProxy.Backend = "/run/haproxy/admin.sock", "web"
	in.WebhookSecret.Value = "hook"
	in.DSN.File = "/etc/drover/db.dsn"
	n, files, err := in.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n.LB.Driver != "haproxy" || n.LB.HAProxy.Server != "web1" || n.LB.DigitalOcean != (LBDigitalOcean{}) {
		t.Errorf("lb: %+v, want haproxy with server web1", n.LB)
	}
	hook := filepath.Join(dir, "webhook.secret")
	if n.Webhook == nil || n.Webhook.SecretFile != hook || len(files) != 1 || files[0].Path != hook || string(files[0].Data) != "hook\n" {
		t.Errorf("webhook %+v, files %+v: want the secret written to %s", n.Webhook, files, hook)
	}
	if n.Database == nil || n.Database.DSNFile != "/etc/drover/db.dsn" || n.Cluster != nil || n.Nginx.TLS != nil {
		t.Errorf("database %+v, cluster %+v, tls %+v", n.Database, n.Cluster, n.Nginx.TLS)
	}

	in = NewInit()
	in.Name, in.Repo.URL = "web1", "https://git.example.com/x.git"
	in.LB.DigitalOcean.LoadBalancerID, in.DOToken.Value = "4de7ac8b", "dop_v1"
	if n, _, err := in.Build(dir); err != nil || n.LB.Driver != "digitalocean" || n.LB.DigitalOcean.TokenFile != filepath.Join(dir, "do.token") {
		t.Errorf("a DigitalOcean LB ID: %+v, %v; want the digitalocean driver with its token file", n.LB, err)
	}
	for _, tc := range []struct {
		set  func(*Init)
		want string
	}{
		{func(in *Init) { in.RedisPassword.Value = "pw" }, "--redis-password is used only with --redis or --sentinel"},
		{func(in *Init) { in.Cluster.Redis = []string{"r:6379"}; in.SentinelPassword.File = "/x" }, "--sentinel-password is used only with --sentinel"},
		{func(in *Init) { in.LB.Driver = "haproxy"; in.DOToken.Value = "t" }, "--do-token is used only with the digitalocean driver"},
		{func(in *Init) { in.DOToken.Value = "t" }, "--do-token is used only with the digitalocean driver"}, // no LB named at all
	} {
		in := NewInit()
		tc.set(in)
		if _, _, err := in.Build(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}

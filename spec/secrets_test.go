package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretFilesReadableByOthersRefused: node.yaml loads only when every
// secret file it names is unreadable to group and others; each refusal
// names the field and the path.
func TestSecretFilesReadableByOthersRefused(t *testing.T) {
	dir := t.TempDir()
	secrets := map[string]string{
		"repo.tokenFile":               "repo.token",
		"cluster.passwordFile":         "redis.pw",
		"webhook.secretFile":           "webhook.secret",
		"lb.digitalocean.tokenFile":    "do.token",
		"database.dsnFile":             "db.dsn",
		"cluster.sentinelPasswordFile": "sentinel.pw",
		"secrets.identityFile":         "age.key",
	}
	for _, f := range secrets {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	node := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(node, []byte(`name: n1
repo: {url: "https://git.example.com/c.git", tokenFile: repo.token}
cluster: {redis: [10.0.0.2:6379], passwordFile: redis.pw, sentinelPasswordFile: sentinel.pw}
webhook: {listen: 127.0.0.1:9095, secretFile: webhook.secret}
lb: {driver: digitalocean, digitalocean: {loadBalancerID: lb1, tokenFile: do.token}}
database: {dsnFile: db.dsn}
secrets: {identityFile: age.key}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNode(node); err != nil {
		t.Fatalf("0600 secrets refused: %v", err)
	}
	for field, f := range secrets {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
			p := filepath.Join(dir, f)
			os.Chmod(p, mode)
			_, err := LoadNode(node)
			if err == nil || !strings.Contains(err.Error(), field+": "+p+" is mode") || !strings.Contains(err.Error(), "chmod 600 "+p) {
				t.Errorf("%s at %o: %v, want a refusal naming the field and path", field, mode, err)
			}
		}
		os.Chmod(filepath.Join(dir, f), 0o400)
	}
	if _, err := LoadNode(node); err != nil {
		t.Fatalf("0400 secrets refused: %v", err)
	}
}

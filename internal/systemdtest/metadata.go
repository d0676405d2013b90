package systemdtest

import (
	"context"
	"testing"
	"time"
)

// ServeMetadata puts addr (the cloud metadata address, 169.254.169.254) on
// the loopback of a node booted with PrivateNetwork and serves HTTP on port
// 80 of every address of the node (a transient unit, python3's
// http.server), and returns once the node itself reaches addr: a stand-in
// for the metadata service, so that a test can show a sandbox keeps a
// process from what the node can reach. Port 80 on 127.0.0.1 serves too:
// something to connect out to.
func (n *Node) ServeMetadata(t testing.TB, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.Run(ctx, "ip", "addr", "add", addr+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Run(ctx, "systemd-run", "--unit", "metadata", "python3", "-m", "http.server", "--bind", "0.0.0.0", "80"); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := n.Run(ctx, "curl", "-sf", "-o", "/dev/null", "--max-time", "2", "http://"+addr+"/")
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the metadata stand-in does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package gitsource

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshServer is a real SSH server (x/crypto/ssh; sshd is not installed
// here) that runs the real git-upload-pack for the one client key it
// accepts.
type sshServer struct {
	addr    string
	hostKey ssh.PublicKey
}

func newSigner(t testing.TB) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func serveSSH(t testing.TB, root string, client ssh.PublicKey) *sshServer {
	t.Helper()
	host, _ := newSigner(t)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(host)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serveSSHConn(c, cfg, root) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &sshServer{addr: l.Addr().String(), hostKey: host.PublicKey()}
}

func serveSSHConn(c net.Conn, cfg *ssh.ServerConfig, root string) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go serveSession(ch, chReqs, root)
	}
}

// serveSession runs `git-upload-pack '<path>'` below root, the one command
// a git client asks for when fetching.
func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, root string) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" || len(req.Payload) < 4 {
			req.Reply(false, nil)
			continue
		}
		line := string(req.Payload[4:])
		prog, arg, _ := strings.Cut(line, " ")
		if prog != "git-upload-pack" {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		dir := filepath.Join(root, filepath.Clean("/"+strings.Trim(arg, "'")))
		cmd := exec.Command("git-upload-pack", dir)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
		status := uint32(0)
		if err := cmd.Run(); err != nil {
			status = 1
		}
		ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
		return
	}
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSSHWithKnownHosts(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	u.write("drover.yaml", "version: 1\n", 0o644)
	rev := u.commit("one")
	client, priv := newSigner(t)
	srv := serveSSH(t, u.root, client.PublicKey())

	dir := t.TempDir()
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeFile(t, dir, "id_ed25519", pem.EncodeToMemory(block))
	hostLine := func(key ssh.PublicKey) []byte {
		return []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.addr)}, key) + "\n")
	}
	known := writeFile(t, dir, "known_hosts", hostLine(srv.hostKey))
	url := "ssh://git@" + srv.addr + "/origin.git"
	ctx := ctxT(t)

	r := openRepo(t, Config{URL: url, SSHKeyFile: keyFile, KnownHostsFile: known}, nil)
	got, err := r.Remote(ctx)
	if err != nil || got != rev {
		t.Fatalf("Remote over ssh = %s, %v; want %s", got, err, rev)
	}
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	tree, err := r.Tree(ctx, rev, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, tree, "drover.yaml"); got != "version: 1\n" {
		t.Fatalf("drover.yaml over ssh = %q", got)
	}

	// A host key that does not match the known one, and a host that is not
	// listed at all, are refused.
	other, _ := newSigner(t)
	wrong := writeFile(t, dir, "known_hosts_wrong", hostLine(other.PublicKey()))
	unlisted := writeFile(t, dir, "known_hosts_unlisted",
		[]byte(knownhosts.Line([]string{"git.example.com"}, srv.hostKey)+"\n"))
	for name, file := range map[string]string{"mismatched": wrong, "unlisted": unlisted} {
		r := openRepo(t, Config{URL: url, SSHKeyFile: keyFile, KnownHostsFile: file}, nil)
		_, err := r.Remote(ctx)
		if err == nil || !strings.Contains(err.Error(), "knownhosts") {
			t.Errorf("Remote with a %s host key: %v, want a knownhosts error", name, err)
		}
	}

	// A key the server does not authorize is refused too.
	_, stranger := newSigner(t)
	block, _ = ssh.MarshalPrivateKey(stranger, "")
	strangerFile := writeFile(t, dir, "id_stranger", pem.EncodeToMemory(block))
	r2 := openRepo(t, Config{URL: url, SSHKeyFile: strangerFile, KnownHostsFile: known}, nil)
	if _, err := r2.Remote(ctx); err == nil {
		t.Error("Remote with an unauthorized key succeeded")
	}
}

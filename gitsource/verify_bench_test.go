package gitsource

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkVerifyRange measures what require: all adds to prepare for a
// push of 1,000 commits: every commit between the live revision and the
// tip checked, half signed with SSH (ssh-keygen) and half with OpenPGP
// (gpg), the history already fetched (the one-off deepening fetch is
// logged apart). "range" starts from nothing verified; "again" is the same
// revision once its range is verified (the next poll, or another prepare
// of it); "ed25519" is the reference measured in the same run: 1,000 bare
// Ed25519 signature checks, the floor under any verifier of 1,000 commits.
func BenchmarkVerifyRange(b *testing.B) {
	const commits = 1000
	k := newKeys(b)
	u := newUpstream(b)
	u.write("drover.yaml", "version: 1\n", 0o644)
	live := u.signedCommit(k.ssh.GitArgs(), "live")
	tree := git(b, u.work, "rev-parse", "HEAD^{tree}")
	parent := live
	start := time.Now()
	for i := range commits {
		signer := k.ssh.GitArgs()
		if i%2 == 1 {
			signer = k.gpg.GitArgs()
		}
		parent = git(b, u.work, append(append([]string(nil), signer...), "commit-tree", "-S", "-p", parent, "-m", "change "+strconv.Itoa(i), tree)...)
	}
	git(b, u.work, "push", "-q", "-f", "origin", parent+":refs/heads/main")
	b.Logf("made %d signed commits in %s", commits, time.Since(start).Round(time.Millisecond))
	tip := parent

	ctx := context.Background()
	r := openRepo(b, Config{URL: u.fileURL()}, nil)
	if err := r.Fetch(ctx, tip); err != nil {
		b.Fatal(err)
	}
	cfg := VerifyConfig{Trust: k.trust, All: true}
	start = time.Now()
	if _, err := r.Verify(ctx, cfg, tip, live); err != nil {
		b.Fatal(err)
	}
	b.Logf("first verify, with the fetches deepening the shallow store over file://: %s", time.Since(start).Round(time.Millisecond))

	b.Run("range", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			os.Remove(r.verifiedFile())
			b.StartTimer()
			if _, err := r.Verify(ctx, cfg, tip, live); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/commits, "µs/commit")
	})
	b.Run("again", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.Verify(ctx, cfg, tip, live); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ed25519", func(b *testing.B) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		signer, _ := ssh.NewSignerFromKey(priv)
		key, _ := ssh.NewPublicKey(pub)
		msg := make([]byte, 300) // about a commit object
		sig, _ := signer.Sign(rand.Reader, msg)
		for b.Loop() {
			for range commits {
				if err := key.Verify(msg, sig); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

package gitsource

import (
	"context"
	"fmt"
	"testing"

	"github.com/drover-dev/drover/internal/command"
)

// BenchmarkPollUnchanged measures one poll of a branch that has not moved,
// as the agent runs it (Remote, then Fetch of the same commit, which is a
// no-op), next to `git ls-remote` of the same repository. Over HTTP both
// are served by git-http-backend and the bytes are counted at the server
// (response bodies), so the two are measured the same way.
func BenchmarkPollUnchanged(b *testing.B) {
	u := newUpstream(b)
	for i := range 50 {
		u.write(fmt.Sprintf("site/f%d.html", i), fmt.Sprintf("<p>%d</p>", i), 0o644)
	}
	u.write("drover.yaml", "version: 1\n", 0o644)
	rev := u.commit("site")
	srv := serveHTTP(b, u.root)
	ctx := context.Background()

	goGit := func(b *testing.B, url string) {
		r := openRepo(b, Config{URL: url}, nil)
		if err := r.Fetch(ctx, rev); err != nil {
			b.Fatal(err)
		}
		srv.counts()
		sent, before := srv.sent.Load(), r.Traffic()
		for b.Loop() {
			got, err := r.Remote(ctx)
			if err != nil || got != rev {
				b.Fatalf("Remote = %s, %v", got, err)
			}
			if err := r.Fetch(ctx, got); err != nil {
				b.Fatal(err)
			}
		}
		report(b, srv, sent)
		if after := r.Traffic(); after.Requests > before.Requests {
			b.ReportMetric(float64(after.Received-before.Received)/float64(b.N), "client-B/poll")
		}
	}
	cli := func(b *testing.B, url string) {
		srv.counts()
		sent := srv.sent.Load()
		for b.Loop() {
			out, err := command.Run(ctx, command.Cmd{Argv: []string{"git", "ls-remote", url, "refs/heads/main"}, Env: gitEnv})
			if err != nil || len(out) < 40 || string(out[:40]) != rev {
				b.Fatalf("git ls-remote = %q, %v", out, err)
			}
		}
		report(b, srv, sent)
	}
	b.Run("file/go-git", func(b *testing.B) { goGit(b, u.fileURL()) })
	b.Run("file/git-cli", func(b *testing.B) { cli(b, u.fileURL()) })
	b.Run("http/go-git", func(b *testing.B) { goGit(b, srv.url()) })
	b.Run("http/git-cli", func(b *testing.B) { cli(b, srv.url()) })
}

// report adds the server's bytes and requests per poll, when any.
func report(b *testing.B, srv *gitServer, sentBefore int64) {
	n := 0
	for _, c := range srv.counts() {
		n += c
	}
	if n == 0 {
		return
	}
	b.ReportMetric(float64(srv.sent.Load()-sentBefore)/float64(b.N), "B/poll")
	b.ReportMetric(float64(n)/float64(b.N), "req/poll")
}

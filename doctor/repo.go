package doctor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/spec"
)

// repo checks the config repo as the agent will reach it: one ls-remote
// with node.yaml's credentials (reachable, then the branch), a shallow fetch
// of the branch's head into a temporary directory, and drover.yaml there.
// Disk space and ports follow, sized by that revision.
func (d *doctor) repo(ctx context.Context) (out []Result) {
	r := d.n.Repo
	var sp *spec.Spec
	var srcBytes int64
	defer func() {
		from := "the revision's sources; worker installs add their dependencies"
		if sp == nil {
			from = "unknown before the repo is read"
		}
		out = append(out, d.certificate(sp), d.disk(srcBytes, from), d.checkPorts(d.ports(sp)))
	}()
	tmp, err := os.MkdirTemp("", "drover-doctor-")
	if err != nil {
		out = append(out, fail("repo", "check the temporary directory ($TMPDIR)", "%v", err))
		return out
	}
	defer os.RemoveAll(tmp)
	g, err := gitsource.Open(gitsource.Config{
		URL: r.URL, Branch: r.Branch, Dir: filepath.Join(tmp, "git"),
		SSHKeyFile: r.SSHKeyFile, KnownHostsFile: r.KnownHostsFile, TokenFile: r.TokenFile, TokenUser: r.TokenUser,
	}, d.cfg.Log)
	if err != nil {
		out = append(out, fail("repo", "check repo.url and that repo.tokenFile, sshKeyFile and knownHostsFile are readable", "%v", err))
		return out
	}
	defer g.Close()
	var rev string
	res := d.bounded(ctx, 1, func(ctx context.Context) Result {
		rev, err = g.Remote(ctx)
		switch {
		case err == nil || errors.Is(err, gitsource.ErrBranchNotFound):
			return pass("repo", "%s is reachable with this node's credentials", r.URL)
		case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
			fix := "give the node a token with read access to the repo: repo.tokenFile (drover init --repo-token -)"
			switch {
			case r.SSHKeyFile != "":
				fix = "add the public key of repo.sshKeyFile to the repo's deploy keys"
			case r.TokenFile != "":
				fix = "the token in " + r.TokenFile + " is wrong, expired, or may not read the repo: replace it"
			}
			return fail("repo", fix, "%s refused this node's credentials (%s): %v", r.URL, credentials(r), err)
		}
		return fail("repo", "check repo.url, DNS and the firewall from this node", "%v", err)
	})
	out = append(out, res)
	if res.Status == Fail {
		return out
	}
	if errors.Is(err, gitsource.ErrBranchNotFound) {
		out = append(out, fail("branch", "push the branch, or set repo.branch to one that exists", "%s has no branch %q", r.URL, r.Branch))
		return out
	}
	out = append(out, pass("branch", "%s is at %.12s", r.Branch, rev))
	out = append(out, d.bounded(ctx, 2, func(ctx context.Context) Result {
		file := spec.PathIn(r.Dir)
		if err := g.Fetch(ctx, rev); err != nil {
			return fail("drover.yaml", "check the repo is readable with these credentials", "fetch %.12s: %v", rev, err)
		}
		tree, err := g.Tree(ctx, rev, r.Dir)
		if err != nil {
			return fail("drover.yaml", "check repo.dir names a directory of the repo", "%.12s: %v", rev, err)
		}
		data, err := spec.ReadFS(tree, spec.FileName, file)
		if err != nil {
			return fail("drover.yaml", "commit a drover.yaml (drover validate checks it before a push)", "%s at %.12s: %v", file, rev, err)
		}
		s, err := spec.ParseFor(file, data, d.cfg.Node.Policy)
		if err == nil {
			err = spec.CheckTree(file, s, tree)
		}
		if err != nil {
			return fail("drover.yaml", "fix these and push; no node applies an invalid revision", "%s at %.12s is invalid:\n%v", file, rev, err)
		}
		sp, d.sp = s, s
		srcBytes = sourceBytes(tree, s)
		return pass("drover.yaml", "%s at %.12s is valid (%d sites, %d workers)", file, rev, len(s.Sites), len(s.Workers))
	}))
	return out
}

// credentials names what the node authenticates to the repo with.
func credentials(r spec.Repo) string {
	switch {
	case r.SSHKeyFile != "":
		return "repo.sshKeyFile " + r.SSHKeyFile
	case r.TokenFile != "":
		return "repo.tokenFile " + r.TokenFile
	}
	return "none: no repo.tokenFile or sshKeyFile"
}

// sourceBytes adds up the files of the repo directories a spec's sites and
// workers are made from.
func sourceBytes(fsys fs.FS, sp *spec.Spec) int64 {
	var dirs []string
	for _, s := range sp.Sites {
		if s.Source != "" {
			dirs = append(dirs, s.Source)
		}
	}
	for _, w := range sp.Workers {
		if w.Source != "" {
			dirs = append(dirs, w.Source)
		}
	}
	var total int64
	for _, dir := range dirs {
		_ = fs.WalkDir(fsys, dir, func(_ string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return err
			}
			if fi, err := e.Info(); err == nil {
				total += fi.Size()
			}
			return nil
		})
	}
	return total
}

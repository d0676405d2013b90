package control

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/artifacts"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/plan"
	"github.com/drover-dev/drover/secretenv"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

// Plan fetches the branch's revision and hands plan.Make the node's parts
// to compare it with the live release: drover plan. It reads the node's
// state but never locks or changes it.
func (k *Control) Plan(ctx context.Context) (*plan.Plan, error) {
	cfg := k.cfg
	log := slog.New(slog.DiscardHandler)
	repo, err := agent.OpenCLIRepo(cfg, log)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	rev, err := repo.Remote(ctx)
	if err != nil {
		return nil, err
	}
	if err := repo.Fetch(ctx, rev); err != nil {
		return nil, err
	}
	cur := ""
	if _, err := os.Lstat(layout.New(cfg.StateDir).Current()); err == nil {
		if cur, err = LiveRevision(cfg); err != nil {
			return nil, err
		}
	}
	var commit, halted string
	if c, err := repo.Commit(ctx, rev); err == nil {
		commit = fmt.Sprintf("%s (%s, %s)", c.Message, c.Author, c.When.Format("2006-01-02 15:04"))
	}
	signature := planSignature(ctx, cfg, repo, rev)
	reason, isHalted, err := k.registry().Halted(ctx, rev)
	if err != nil {
		return nil, err
	}
	if isHalted {
		halted = reason
	}
	tree, err := repo.Tree(ctx, rev, cfg.Repo.Dir)
	if err != nil {
		return nil, err
	}
	in := plan.Input{
		Node: cfg.Name, StateDir: cfg.StateDir, Live: cur,
		Rev: rev, Tree: tree, Dir: cfg.Repo.Dir, Policy: cfg.Policy,
		SourceIDs: artifacts.SourceIDs,
		Render:    agent.NewWebServer(cfg, layout.New(cfg.StateDir).Current(), "", log).Render,
	}
	if cfg.Secrets != nil {
		identity := cfg.Secrets.IdentityFile
		in.Decrypt = func(w spec.Worker, fsys fs.FS) (secrets.Vars, error) {
			envs, err := secretenv.Decrypt(identity, &spec.Spec{Workers: []spec.Worker{w}}, fsys)
			return envs[w.Name], err
		}
	}
	p, err := plan.Make(in)
	if err != nil {
		return nil, err
	}
	p.Commit, p.Signature, p.Halted = commit, signature, halted
	return p, nil
}

// planSignature is what plan says of rev's signature with repo.verify:
// who signed it, or why the agent will refuse it. It checks rev itself
// only: the CLI's store is not deepened for require: all.
func planSignature(ctx context.Context, cfg *spec.Node, repo *gitsource.Repo, rev string) string {
	rv := cfg.Repo.Verify
	if rv == nil {
		return ""
	}
	trust, err := gitsource.LoadTrust(rv.OpenPGPKeyring, rv.SSHAllowedSigners)
	if err != nil {
		return "cannot check: " + err.Error()
	}
	signer, err := repo.Verify(ctx, gitsource.VerifyConfig{Trust: trust}, rev, "")
	if err != nil {
		return "REFUSED: " + err.Error()
	}
	return "signed by " + signer
}

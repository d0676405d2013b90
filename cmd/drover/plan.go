package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/artifacts"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/plan"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/secretenv"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("plan", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	output := flags.String("o", "text", "output format: text or json")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	cfg, err := spec.LoadNode(*config)
	if err != nil {
		return err
	}
	p, err := makePlan(ctx, cfg)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	printPlan(stdout, p)
	return nil
}

// makePlan fetches the branch's revision and hands plan.Make the node's
// parts to compare it with the live release. It reads the node's state but
// never locks or changes it, so it runs beside a live agent.
func makePlan(ctx context.Context, cfg *spec.Node) (*plan.Plan, error) {
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
		if cur, err = liveRevision(cfg); err != nil {
			return nil, err
		}
	}
	var commit, halted string
	if c, err := repo.Commit(ctx, rev); err == nil {
		commit = fmt.Sprintf("%s (%s, %s)", c.Message, c.Author, c.When.Format("2006-01-02 15:04"))
	}
	signature := planSignature(ctx, cfg, repo, rev)
	err = withCluster(ctx, "", cfg, func(_ *spec.Node, c *cluster.Cluster) error {
		var reg reconcile.Registry = &reconcile.FileRegistry{Dir: cfg.StateDir}
		if c != nil {
			reg = c
		}
		reason, isHalted, err := reg.Halted(ctx, rev)
		if err == nil && isHalted {
			halted = reason
		}
		return err
	})
	if err != nil {
		return nil, err
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

// printPlan is plan's text output.
func printPlan(w io.Writer, p *plan.Plan) {
	if p.From == p.To {
		fmt.Fprintf(w, "%s is on %s: nothing to do\n", p.Node, shortRev(p.To))
		return
	}
	fmt.Fprintf(w, "%s: %s -> %s", p.Node, shortRev(p.From), shortRev(p.To))
	if p.Commit != "" {
		fmt.Fprintf(w, "  %s", p.Commit)
	}
	fmt.Fprintln(w)
	if p.Halted != "" {
		fmt.Fprintf(w, "HALTED: this revision failed and will not be applied: %s\n", firstLine(p.Halted))
	}
	if p.Signature != "" {
		fmt.Fprintf(w, "signature: %s\n", p.Signature)
	}
	section := func(title string, cs []plan.Change) {
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, c := range cs {
			sign := map[string]string{"add": "+", "remove": "-", "change": "~", "keep": "="}[c.Action]
			fmt.Fprintf(w, "  %s %s", sign, c.Name)
			if len(c.What) > 0 {
				fmt.Fprintf(w, " (%s)", strings.Join(c.What, "; "))
			}
			fmt.Fprintln(w)
		}
	}
	section("sites", p.Sites)
	section("workers", p.Workers)
	if len(p.NginxDiff) == 0 {
		fmt.Fprintf(w, "\nnginx config: unchanged\n")
		return
	}
	fmt.Fprintf(w, "\nnginx config:\n")
	for _, l := range p.NginxDiff {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/drover-dev/drover/control"
	"github.com/drover-dev/drover/plan"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("plan", stderr)
	output := flags.String("o", "text", "output format: text or json")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		p, err := k.Plan(ctx)
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
	})
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

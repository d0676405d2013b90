package printers

import (
	"fmt"
	"io"
	"strings"

	"github.com/drover-dev/drover/plan"
)

// Plan is drover plan: the move, whether it is halted or signed, the sites
// and workers it adds, removes, changes or keeps, and the nginx config's
// diff.
func Plan(w io.Writer, p *plan.Plan) {
	if p.From == p.To {
		fmt.Fprintf(w, "%s is on %s: nothing to do\n", p.Node, short(p.To))
		return
	}
	fmt.Fprintf(w, "%s: %s -> %s", p.Node, short(p.From), short(p.To))
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

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/drover-dev/drover/internal/printers"
	"github.com/drover-dev/drover/internal/revid"
)

// Exit codes of every command.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found a problem (invalid spec, failed sync)
	exitUsage   = 2 // the command line was wrong
)

// command is one subcommand of drover.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"validate": {"check a config directory (drover.yaml and what it refers to)", cmdValidate},
		"plan":     {"show what this node would change to reach the branch's revision", cmdPlan},
		"agent":    {"run the node agent: poll the repo and roll out new revisions", cmdAgent},
		"status":   {"show the cluster (or this node): revisions, steps, lock, halted revisions, events", cmdStatus},
		"sync":     {"ask every node (or this node's agent) to poll the repo now", cmdSync},
		"pause":    {"stop rollouts cluster-wide (a node mid-step finishes its step)", cmdPause},
		"resume":   {"let rollouts go on", cmdResume},
		"forget":   {"remove a node that is gone for good from the cluster", cmdForget},
		"clear":    {"clear a halted revision so nodes apply it again", cmdClear},
		"pin":      {"pin the cluster to a revision instead of the branch head (rolled out like a new commit)", cmdPin},
		"unpin":    {"follow the branch again after pin or rollback", cmdUnpin},
		"rollback": {"pin the revision live before the current one (or REV)", cmdRollback},
		"promote":  {"release the other nodes after REV's canary passed (rollout.canary promote: manual)", cmdPromote},
		"abort":    {"fail REV's canary: halt it cluster-wide and roll the canary node back", cmdAbort},
		"history":  {"every revision the cluster saw: commit, per-node outcome, drained window, who did what", cmdHistory},
		"migrate":  {"apply or inspect database migrations: status, up, resolve", cmdMigrate},
		"secrets":  {"encrypted secrets in the repo: keygen, recipients, encrypt, edit", cmdSecrets},
		"version":  {"print drover's version", cmdVersion},
		"init":     {"write this node's node.yaml from flags (secrets to 0600 files)", cmdInit},
		"doctor":   {"check this node's prerequisites: nginx, systemd, repo, Redis, LB, database, secrets, disk, ports", cmdDoctor},
		"idle":     {"tell (or --wait until) this node's agent is between rollouts; the package's upgrade uses it", cmdIdle},
	}
}

// usageError is a wrong command line: exit 2 with the usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitError carries an exit code chosen by a command (e.g. validate's 1)
// after it printed its own report.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "drover: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return exitUsage
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "drover %s: %s\n", args[0], ue.msg)
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(stderr, "drover %s: %v\n", args[0], err)
		return exitFailure
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintf(w, "drover %s: GitOps deployments for a few plain servers\n\nUsage: drover COMMAND [flags]\n\nCommands:\n", version)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nRun drover COMMAND -h for a command's flags.\n")
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("drover "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// setUsage makes fs's -h print usage, then the flags.
func setUsage(fs *flag.FlagSet, stderr io.Writer, usage string) {
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
}

// subcommand splits the subcommand (one of subs) off the arguments of
// drover name, a command that has them (migrate, secrets); none, help or
// an unknown one prints usage. Each subcommand has its own flags, which its
// -h lists.
func subcommand(name string, args []string, usage string, stderr io.Writer, subs ...string) (string, []string, error) {
	list := strings.Join(subs[:len(subs)-1], ", ") + " or " + subs[len(subs)-1]
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, usage)
		return "", nil, usageError{"missing subcommand: " + list}
	case slices.Contains(subs, args[0]):
		return args[0], args[1:], nil
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprintf(stderr, "%s\nRun drover %s SUBCOMMAND -h for its flags.\n", usage, name)
		return "", nil, flag.ErrHelp
	}
	fmt.Fprint(stderr, usage)
	return "", nil, usageError{fmt.Sprintf("unknown subcommand %q: %s", args[0], list)}
}

// parseNoArgs is parseFlags for a command that takes no arguments.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"unexpected arguments: " + strings.Join(fs.Args(), " ")}
	}
	return nil
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{strings.TrimSpace(err.Error())}
	}
	return nil
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "drover %s\n", version)
	return nil
}

// outputFlag is the -o flag of the commands that print a report: text
// for people, json for scripts; any other value is a usage error.
type outputFlag struct{ json bool }

func newOutputFlag(fs *flag.FlagSet) *outputFlag {
	o := &outputFlag{}
	fs.Var(o, "o", "output `format`: text or json (default text)")
	return o
}

func (o *outputFlag) String() string {
	if o != nil && o.json {
		return "json"
	}
	return "text"
}

func (o *outputFlag) Set(s string) error {
	if s != "text" && s != "json" {
		return errors.New("must be text or json")
	}
	o.json = s == "json"
	return nil
}

// write prints v as JSON with -o json, else as text prints it.
func (o *outputFlag) write(w io.Writer, v any, text func()) error {
	if o.json {
		return printers.JSON(w, v)
	}
	text()
	return nil
}

// shortRev abbreviates a commit id for people.
func shortRev(rev string) string { return revid.Short(rev) }

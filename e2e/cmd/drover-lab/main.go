// Command drover-lab runs drover's end-to-end lab on this machine: three
// nodes, each a real systemd in its own network namespace running nginx and
// the drover agent, behind HAProxy, with Redis + Sentinel, PostgreSQL and a
// git forge (see package e2e/lab). `make demo` and `make demo-stop` use it.
//
//	drover-lab up [flags]          start the lab; prints where to look
//	drover-lab down                stop it and remove everything it made
//	drover-lab status              nodes, load balancer, drover's cluster view
//	drover-lab exec NODE COMMAND [ARG]  run a command on a node
//	drover-lab kill NODE|SERVICE   kill a node (a lost server) or an infra service
//	drover-lab start NODE|SERVICE  boot a node again, or restart a service
//	drover-lab forge [flags]       the git forge (run by the lab itself)
//	drover-lab receiver [flags]    the notification receiver (run by the lab itself)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/e2e/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "drover-lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: drover-lab up|down|status|exec|kill|start [args] (see the package doc)")
	}
	fs := flag.NewFlagSet("drover-lab "+args[0], flag.ContinueOnError)
	dir := fs.String("dir", "/tmp/drover-lab", "the lab's state directory")
	logf := func(format string, a ...any) { fmt.Fprintf(out, "lab: "+format+"\n", a...) }
	switch args[0] {
	case "up":
		var cfg lab.Config
		fs.StringVar(&cfg.Source, "source", "", "drover checkout (default: found from the working directory)")
		fs.StringVar(&cfg.Drover, "drover", "", "drover binary for the nodes (default SOURCE/bin/drover)")
		fs.StringVar(&cfg.Work, "work", "", "where to make your clone of the config repo (default DIR/work)")
		fs.DurationVar(&cfg.PollInterval, "poll", 0, "the agents' poll interval (default 10s; pushes wake them at once)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		cfg.Dir, cfg.Log = *dir, logf
		l, err := lab.New(cfg)
		if err != nil {
			return err
		}
		if err := l.Up(ctx); err != nil {
			return err
		}
		printWelcome(out, l)
		return nil
	case "forge":
		var f lab.Forge
		fs.StringVar(&f.Root, "root", "", "directory of the bare repos")
		fs.StringVar(&f.Listen, "listen", "", "host:port")
		fs.StringVar(&f.Branch, "branch", "main", "branch whose moves are pushed as webhooks")
		fs.StringVar(&f.Webhook, "webhook", "", "push webhook URL")
		fs.StringVar(&f.WebhookHost, "webhook-host", "", "Host header of the webhook")
		fs.StringVar(&f.SecretFile, "secret-file", "", "webhook secret")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		f.Log = log.New(os.Stderr, "forge: ", log.LstdFlags|log.Lmicroseconds)
		return f.Run(ctx)
	case "receiver":
		var r lab.Receiver
		fs.StringVar(&r.Listen, "listen", "", "host:port")
		fs.StringVar(&r.Out, "out", "", "file the notifications are appended to, one JSON line each")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		r.Log = log.New(os.Stderr, "notify: ", log.LstdFlags|log.Lmicroseconds)
		return r.Run(ctx)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	rest := fs.Args()
	l, err := lab.Open(*dir)
	if err != nil {
		return err
	}
	l.SetLog(logf)
	switch args[0] {
	case "down":
		return l.Down(ctx)
	case "status":
		return status(ctx, out, l)
	case "exec":
		if len(rest) < 2 {
			return errors.New("usage: drover-lab exec NODE COMMAND [ARG]")
		}
		n := l.Node(rest[0])
		if n == nil || !n.Running() {
			return fmt.Errorf("node %s is not running", rest[0])
		}
		cmd := n.Sys().Command(ctx, rest[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	case "kill", "start":
		if len(rest) != 1 {
			return fmt.Errorf("usage: drover-lab %s NODE|SERVICE", args[0])
		}
		if n := l.Node(rest[0]); n != nil {
			if args[0] == "kill" {
				n.Kill()
				return nil
			}
			return n.Start(ctx)
		}
		if args[0] == "kill" {
			return l.Kill(rest[0])
		}
		return l.Start(ctx, rest[0])
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func printWelcome(out io.Writer, l *lab.Lab) {
	lb := l.LBAddr()
	host, _, _ := net.SplitHostPort(lb)
	fmt.Fprintf(out, `
The lab runs: %d nodes behind HAProxy at http://%s
The agents are putting the example live, one node at a time (about a minute).

  The sites, through the load balancer:
    curl -H 'Host: blog.example.com' http://%s/
    curl -H 'Host: app.example.com'  http://%s/api/version
  The nodes, the load balancer's view and drover's cluster status:
    %s
  Roll out a change: commit it in your clone of the config repo (a hook
  pushes it); the forge sends a webhook and the nodes update one at a time:
    cd %s
    sed -i 's/const version = "1"/const version = "2"/' workers/feedback-api/server.js
    git commit -qam "feedback-api v2"
    watch -n1 %s
  A node's agent log:   %s exec n1 journalctl -fu drover
  A node's metrics:     curl -s http://%s/metrics | grep ^drover_
  Notifications sent:   curl -s %s   (the last few are in status too)
  History:              %s exec n1 drover history
  Stop it all:          make demo-stop
`, len(l.Nodes()), lb, host, host, labCmd("status"), l.Work(), labCmd("status"), labCmd(""),
		l.Nodes()[0].MetricsAddr(), l.NotifyURL(), labCmd(""))
}

func labCmd(sub string) string {
	exe, err := os.Executable()
	if err != nil {
		exe = "drover-lab"
	}
	return strings.TrimSpace(exe + " " + sub)
}

// status prints each node's systemd state and live release, HAProxy's view
// of the nodes, and drover's cluster status from the first running node.
func status(ctx context.Context, out io.Writer, l *lab.Lab) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var first *lab.Node
	for _, n := range l.Nodes() {
		state := "down"
		if n.Running() {
			s, _ := n.Sys().SystemState(ctx)
			state = s
			if first == nil {
				first = n
			}
		}
		fmt.Fprintf(out, "%-4s %-12s systemd %-9s live %s\n", n.Name(), n.IP(), state, n.Live())
	}
	if lbState, err := l.LBServers(ctx); err == nil {
		fmt.Fprintf(out, "\nload balancer:\n")
		for _, s := range lbState {
			fmt.Fprintf(out, "  %-4s %s\n", s.Name, s.State)
		}
	}
	if ns, err := l.Notifications(); err == nil && len(ns) > 0 {
		fmt.Fprintf(out, "\nnotifications (the lab's receiver, last %d of %d):\n", min(5, len(ns)), len(ns))
		for _, n := range ns[max(0, len(ns)-5):] {
			fmt.Fprintf(out, "  %s %-18s %s\n", n.Time.Local().Format(time.TimeOnly), n.Event, n.Text)
		}
	}
	if first != nil {
		fmt.Fprintln(out)
		cmd := first.Sys().Command(ctx, "drover", "status", "--config", "/etc/drover/node.yaml")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				return err
			}
		}
	}
	return nil
}

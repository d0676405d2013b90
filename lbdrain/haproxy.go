package lbdrain

import (
	"bufio"
	"cmp"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// HAProxy server admin-state bits, as `show servers state` reports them
// (srv_admin_state; HAProxy's SRV_ADMF_*).
const (
	admForcedMaint = 0x01 // set server ... state maint
	admForcedDrain = 0x08 // set server ... state drain
)

// runtimeAPI is a client of HAProxy's runtime API: one command per
// connection (the non-interactive mode), the answer read to EOF.
type runtimeAPI struct {
	network, addr string
}

func newRuntimeAPI(socket string) runtimeAPI {
	if strings.Contains(socket, "/") {
		return runtimeAPI{"unix", strings.TrimPrefix(socket, "unix@")}
	}
	return runtimeAPI{"tcp", strings.TrimPrefix(socket, "ipv4@")}
}

func (r runtimeAPI) do(ctx context.Context, command string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, r.network, r.addr)
	if err != nil {
		return "", fmt.Errorf("haproxy runtime API: %w", err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", fmt.Errorf("haproxy runtime API %q: %w", command, err)
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		return "", fmt.Errorf("haproxy runtime API %q: %w", command, err)
	}
	return string(b), nil
}

// set runs a command whose success is an empty answer; any text is HAProxy
// refusing it ("No such server.", "Permission denied").
func (r runtimeAPI) set(ctx context.Context, command string) error {
	out, err := r.do(ctx, command)
	if err != nil {
		return err
	}
	if msg := strings.TrimSpace(out); msg != "" {
		return fmt.Errorf("haproxy refused %q: %s", command, msg)
	}
	return nil
}

// serverState is the row of `show servers state BACKEND` for server, by
// column name.
func (r runtimeAPI) serverState(ctx context.Context, backend, server string) (map[string]string, error) {
	out, err := r.do(ctx, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	var header []string
	for _, line := range strings.Split(out, "\n") {
		switch f := strings.Fields(line); {
		case len(f) > 1 && f[0] == "#":
			header = f[1:]
		case header != nil && len(f) == len(header):
			row := map[string]string{}
			for i, h := range header {
				row[h] = f[i]
			}
			if row["srv_name"] == server {
				return row, nil
			}
		}
	}
	if header == nil {
		return nil, fmt.Errorf("haproxy: show servers state %s: %s", backend, strings.TrimSpace(out))
	}
	return nil, fmt.Errorf("haproxy: no server %q in backend %q", server, backend)
}

// stat is the row of `show stat` for backend/server, by CSV header name.
func (r runtimeAPI) stat(ctx context.Context, backend, server string) (map[string]string, error) {
	out, err := r.do(ctx, "show stat "+backend+" 4 -1")
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(out, "# ") {
		return nil, fmt.Errorf("haproxy: show stat %s: %s", backend, strings.TrimSpace(out))
	}
	rows, err := csv.NewReader(strings.NewReader(out[2:])).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("haproxy: show stat: %w", err)
	}
	header := rows[0]
	for _, rec := range rows[1:] {
		row := map[string]string{}
		for i, h := range header {
			if i < len(rec) {
				row[h] = rec[i]
			}
		}
		if row["pxname"] == backend && row["svname"] == server {
			return row, nil
		}
	}
	return nil, fmt.Errorf("haproxy: no server %q in backend %q", server, backend)
}

func atoiField(row map[string]string, name string) (int, error) {
	n, err := strconv.Atoi(row[name])
	if err != nil {
		return 0, fmt.Errorf("haproxy: field %s is %q, not a number", name, row[name])
	}
	return n, nil
}

// haProxy drains a server through the runtime API.
type haProxy struct {
	api             runtimeAPI
	backend, server string
	timeout         time.Duration
	inflight        *inflightWaiter
	// accessLog and interval are for the quiet-counter rule (see
	// waitQuiet): HAProxy's own checks, logged there, keep reaching a
	// drained server and are not requests.
	accessLog string
	interval  time.Duration
	poll      time.Duration
	log       *slog.Logger
	outcome
}

// haproxyMaxQuiet bounds the haproxy driver's quiet window: HAProxy stops
// choosing a server in DRAIN at once (its checks' interval does not delay
// it), so the window is only for requests already on their way, and one
// check interval (node.yaml's lb.healthcheck.interval, default 10 s, a
// cloud LB's) would be far more than they need. 2 s is HAProxy's default
// inter.
const haproxyMaxQuiet = 2 * time.Second

func newHAProxy(cfg Config, log *slog.Logger) *haProxy {
	x := cfg.HAProxy
	return &haProxy{
		api: newRuntimeAPI(x.Socket), backend: x.Backend, server: x.Server,
		timeout: cfg.DrainTimeout, inflight: newInflightWaiter(cfg.StatusURL),
		accessLog: cfg.HealthCheck.AccessLog, interval: min(cmp.Or(cfg.HealthCheck.CheckInterval, haproxyMaxQuiet), haproxyMaxQuiet),
		poll: 50 * time.Millisecond, log: log.With("server", x.Backend+"/"+x.Server),
	}
}

func (d *haProxy) adminState(ctx context.Context) (int, error) {
	row, err := d.api.serverState(ctx, d.backend, d.server)
	if err != nil {
		return 0, err
	}
	return atoiField(row, "srv_admin_state")
}

// Drain sets the server to DRAIN (HAProxy then sends it only requests of
// sessions persisted to it, e.g. by a stick table or cookie), checks that
// HAProxy took the change, and waits until the server's current and queued
// sessions reach 0; then, with StatusURL and the health log, until no
// request but HAProxy's checks and drover's own reached nginx for one check
// interval with none in flight (the quiet-counter rule, see waitQuiet), or
// with StatusURL alone until nginx has nothing in flight. A server an
// operator put in MAINT is left there. DrainTimeout bounds it all.
func (d *haProxy) Drain(ctx context.Context) error {
	d.reset()
	var hw *healthWatch
	if d.accessLog != "" && d.inflight != nil {
		var err error
		if hw, err = watchHealthLog(d.accessLog, time.Now()); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	admin, err := d.adminState(ctx)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if admin&(admForcedDrain|admForcedMaint) == 0 {
		if err := d.api.set(ctx, fmt.Sprintf("set server %s/%s state drain", d.backend, d.server)); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if admin, err = d.adminState(ctx); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if admin&(admForcedDrain|admForcedMaint) == 0 {
			return fmt.Errorf("drain: haproxy accepted `state drain` but reports admin state %#x", admin)
		}
	}
	start := time.Now()
	deadline := start.Add(d.timeout)
	for {
		row, err := d.api.stat(ctx, d.backend, d.server)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		scur, err := atoiField(row, "scur")
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		qcur, err := atoiField(row, "qcur")
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if scur+qcur == 0 {
			d.log.Info("haproxy reports no session on the server", "status", row["status"], "took", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			d.log.Warn("drain timeout passed with sessions on the server; going on", "inflight", scur+qcur, "took", time.Since(start).Round(time.Millisecond))
			d.set(fmt.Sprintf("haproxy had %d sessions on the server at the drain timeout", scur+qcur))
			return nil
		}
		if err := sleepCtx(ctx, d.poll); err != nil {
			return fmt.Errorf("drain: wait for sessions to end: %w", err)
		}
	}
	if hw != nil {
		return d.inflight.quiet(ctx, hw, d.interval, later(deadline, time.Now().Add(d.poll)), d.log, &d.outcome)
	}
	n, err := d.inflight.wait(ctx, max(time.Until(deadline), d.poll), d.log)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	d.inflightLeft(n)
	return nil
}

// Undrain sets the server READY and waits until HAProxy reports it "UP"
// (its health checks pass; not DRAIN, MAINT, NOLB, nor a transition such as
// "UP 1/2") or "no check": then the balancing algorithm picks it again.
func (d *haProxy) Undrain(ctx context.Context) error {
	admin, err := d.adminState(ctx)
	if err != nil {
		return fmt.Errorf("undrain: %w", err)
	}
	if admin&(admForcedDrain|admForcedMaint) != 0 {
		if err := d.api.set(ctx, fmt.Sprintf("set server %s/%s state ready", d.backend, d.server)); err != nil {
			return fmt.Errorf("undrain: %w", err)
		}
	}
	start := time.Now()
	for {
		row, err := d.api.stat(ctx, d.backend, d.server)
		if err != nil {
			return fmt.Errorf("undrain: %w", err)
		}
		// "UP 1/2" is a server whose last check failed, going down.
		if st := row["status"]; st == "UP" || st == "no check" {
			d.log.Info("haproxy runs the server again", "status", st, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if err := sleepCtx(ctx, d.poll); err != nil {
			return fmt.Errorf("undrain: haproxy does not run the server (status %s, last check %s %s): %w",
				row["status"], row["check_status"], row["check_code"], err)
		}
	}
}

// Drained reports whether the server was put in DRAIN or MAINT through the
// runtime API (not an inherited or configured state, which drover does not
// undo).
func (d *haProxy) Drained(ctx context.Context) (bool, error) {
	admin, err := d.adminState(ctx)
	if err != nil {
		return false, fmt.Errorf("drained: %w", err)
	}
	return admin&(admForcedDrain|admForcedMaint) != 0, nil
}

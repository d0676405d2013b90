package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/lbdrain"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/spec"
)

func (d *doctor) lb(ctx context.Context) []Result {
	return []Result{d.bounded(ctx, 1, func(ctx context.Context) Result {
		cfg := d.cfg.LB
		probe, err := lbdrain.Check(ctx, cfg)
		d.target = probe.Target
		switch {
		case err == nil:
			return pass("lb", "%s", probe.Detail)
		case errors.Is(err, lbdrain.ErrNotInRotation):
			return warn("lb", "drover adds it at this node's first rollout; add it in the control panel to serve before that", "%v", err)
		}
		fix := "check the lb section of node.yaml"
		switch cfg.Driver {
		case lbdrain.DriverDigitalOcean:
			fix = "run doctor on the droplet; check lb.digitalocean.loadBalancerID (doctl compute load-balancer list) and that the token has read and write scope (drover init --force --do-token - replaces it)"
		case lbdrain.DriverHAProxy:
			fix = "HAProxy needs `stats socket PATH level admin` and a server named lb.haproxy.server in lb.haproxy.backend"
		}
		return fail("lb", fix, "%s: %v", cfg.Driver, err)
	})}
}

// healthTarget compares the LB's health check with the endpoint nginx
// serves on the health port: 200 in service, 503 drained or unhealthy. A
// check elsewhere never sees either, so the LB would mark every node down,
// or never stop sending to a failing one.
func (d *doctor) healthTarget(t *lbdrain.HealthTarget, sp *spec.Spec) Result {
	const check = "lb health check"
	var port int
	var path string
	if sp != nil {
		port, path = sp.Nginx.HealthPort, sp.Nginx.HealthPath
	}
	if d.n.Nginx.HealthPort != 0 {
		port = d.n.Nginx.HealthPort
	}
	want := fmt.Sprintf("HTTP, port %d, path %s", port, path)
	fix := "set the load balancer's health check to " + want + " (control panel → the LB → Settings → Health checks)"
	switch {
	case t.Protocol == "tcp":
		return warn(check, fix, "the LB only opens a TCP connection to port %d: it cannot see a node answer 503 while it is unhealthy", t.Port)
	case t.Protocol != "http":
		return fail(check, fix, "the LB checks over %s; the health port serves plain HTTP", t.Protocol)
	case sp == nil:
		return warn(check, "fix the repo check above", "the LB checks %s port %d path %s; not compared: drover.yaml (its health port and path) could not be read", t.Protocol, t.Port, t.Path)
	case t.Port != port:
		return fail(check, fix, "the LB checks port %d; nginx serves the health endpoint on port %d", t.Port, port)
	case t.Path != path:
		return fail(check, fix, "the LB checks path %s; nginx serves the health endpoint at %s (drover.yaml's nginx.healthPath)", t.Path, path)
	}
	return pass(check, "the LB checks %s, which nginx serves", want)
}

// database checks the migrations database with migrate's own probe, which
// refuses a pooler in transaction or statement mode: migrations hold a
// session's advisory lock, which such a pooler does not keep.
func (d *doctor) database(ctx context.Context) []Result {
	db := d.n.Database
	if db == nil {
		return []Result{pass("database", "no database section: a revision with migrations is refused on this node")}
	}
	return []Result{d.bounded(ctx, 1, func(ctx context.Context) Result {
		dsn, err := secret(db.DSNFile)
		if err != nil {
			return fail("database", "make database.dsnFile readable by root (drover init --dsn -)", "database.dsnFile: %v", err)
		}
		dsn = strings.TrimSpace(dsn)
		if dsn == "" {
			return fail("database", "write the PostgreSQL URL into it", "database.dsnFile %s is empty", db.DSNFile)
		}
		where := dsn
		if c, err := pgx.ParseConfig(dsn); err == nil {
			where = c.Host + "/" + c.Database
		} else {
			where = "database.dsnFile " + db.DSNFile
		}
		m, err := migrate.Open(ctx, dsn, migrate.Config{Node: d.n.Name})
		switch {
		case errors.Is(err, migrate.ErrTransactionPooling):
			return fail("database", "point database.dsnFile at PostgreSQL itself (port 5432), or at a PgBouncer pool with pool_mode=session", "%s: %v", where, err)
		case err != nil:
			return fail("database", "check the URL, that PostgreSQL listens there and pg_hba.conf lets this node in", "%s: %v", where, err)
		}
		m.Close(context.WithoutCancel(ctx))
		return pass("database", "%s answers, one session per connection (no transaction pooling)", where)
	})}
}

func (d *doctor) webhook(context.Context) []Result {
	w := d.n.Webhook
	if w == nil {
		return []Result{pass("webhook", "none: the agent polls every %s", d.n.Repo.PollInterval)}
	}
	s, err := secret(w.SecretFile)
	switch {
	case err != nil:
		return []Result{fail("webhook", "make webhook.secretFile readable by root (drover init --webhook-secret -)", "webhook.secretFile: %v", err)}
	case strings.TrimSpace(s) == "":
		return []Result{fail("webhook", "write the secret the forge signs pushes with", "webhook.secretFile %s is empty", w.SecretFile)}
	}
	host := w.ServerName
	if host == "" {
		host = "no host (webhook.serverName unset: nginx does not route it)"
	}
	return []Result{pass("webhook", "secret readable; pushes to %s on %s reach %s", w.Path, host, w.Listen)}
}

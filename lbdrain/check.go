package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/digitalocean/godo"
)

// ErrNotInRotation is Check's answer when the load balancer and the
// credentials are fine but this node is not among the LB's members: not a
// failure (Undrain adds it at the node's first rollout), but worth saying.
// The Probe returned with it still has the LB's health-check target.
var ErrNotInRotation = errors.New("this node is not in the load balancer's rotation")

// Probe is what Check found.
type Probe struct {
	Detail string
	// Target is the LB's health check of the node, when the driver can read
	// it (DigitalOcean): it must ask nginx's health port and path.
	Target *HealthTarget
}

// HealthTarget is where a load balancer's health check asks a node.
type HealthTarget struct {
	Protocol string // http, https or tcp
	Port     int
	Path     string
}

// Check verifies, changing nothing, that cfg's driver reaches its load
// balancer with its credentials and finds this node there, and says what it
// found. It is drover doctor's probe: one request or two, bounded by ctx,
// with no retries beyond what ctx leaves room for.
func Check(ctx context.Context, cfg Config) (Probe, error) {
	if err := cfg.Validate(); err != nil {
		return Probe{}, err
	}
	switch cfg.Driver {
	case DriverHAProxy:
		x := cfg.HAProxy
		row, err := newRuntimeAPI(x.Socket).serverState(ctx, x.Backend, x.Server)
		if err != nil {
			return Probe{}, err
		}
		adm, err := atoiField(row, "srv_admin_state")
		if err != nil {
			return Probe{}, err
		}
		state := "in rotation"
		switch {
		case adm&admForcedMaint != 0:
			state = "in maintenance"
		case adm&admForcedDrain != 0:
			state = "drained"
		}
		return Probe{Detail: fmt.Sprintf("HAProxy at %s has server %s/%s (%s)", x.Socket, x.Backend, x.Server, state)}, nil
	case DriverDigitalOcean:
		d, err := newDigitalOcean(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			return Probe{}, err
		}
		// The droplet's ID first: only the droplet itself can ask the
		// metadata service, and that failure needs its own advice.
		if _, err := d.droplet(ctx); err != nil {
			return Probe{}, fmt.Errorf("this machine is not a DigitalOcean droplet, or its metadata service does not answer: %w", err)
		}
		s, id, err := d.state(ctx)
		if err != nil {
			var er *godo.ErrorResponse
			if errors.As(err, &er) && er.Response != nil {
				switch er.Response.StatusCode {
				case http.StatusUnauthorized:
					return Probe{}, fmt.Errorf("the DigitalOcean API refused the token of lb.digitalocean.tokenFile (%s): %w", cfg.DigitalOcean.TokenFile, err)
				case http.StatusForbidden:
					return Probe{}, fmt.Errorf("the token of lb.digitalocean.tokenFile (%s) may not read load balancers (it needs read and write scope): %w", cfg.DigitalOcean.TokenFile, err)
				case http.StatusNotFound:
					return Probe{}, fmt.Errorf("no load balancer %s in this account (lb.digitalocean.loadBalancerID): %w", cfg.DigitalOcean.LoadBalancerID, err)
				}
			}
			return Probe{}, err
		}
		how := "its droplet list"
		if s.tag != "" {
			how = fmt.Sprintf("tag %q", s.tag)
		}
		p := Probe{Detail: fmt.Sprintf("load balancer %s has droplet %d (by %s); it checks every %ds, down after %d failures, up after %d passes",
			cfg.DigitalOcean.LoadBalancerID, id, how, s.interval, s.unhealthy, s.healthy)}
		if h := s.check; h != nil {
			p.Target = &HealthTarget{Protocol: h.Protocol, Port: h.Port, Path: h.Path}
		}
		if !s.member {
			// The target is known all the same: the caller still checks it.
			p.Detail = ""
			return p, fmt.Errorf("droplet %d is not in load balancer %s (by %s): %w", id, cfg.DigitalOcean.LoadBalancerID, how, ErrNotInRotation)
		}
		return p, nil
	case DriverHealthCheck:
		h := cfg.HealthCheck
		return Probe{Detail: fmt.Sprintf("the LB polls this node's health endpoint (lb.healthcheck: every %s, down after %d failures, up after %d passes)",
			h.CheckInterval, h.UnhealthyThreshold, h.HealthyThreshold)}, nil
	default:
		return Probe{Detail: "no load balancer (lb.driver none)"}, nil
	}
}

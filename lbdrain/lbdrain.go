// Package lbdrain takes this node out of load-balancer rotation before a
// switch and puts it back afterwards, and it waits for proof both ways.
//
// The contract, the same for every driver:
//
//   - Drain(ctx) returns nil once the load balancer itself has stopped
//     sending this node requests and the requests already in flight have
//     finished, never after a fixed wait alone. The LB's stop is proven by
//     the driver (HAProxy reports the server in DRAIN and its sessions at 0;
//     the health log shows the LB's checks answered 503 UnhealthyThreshold
//     times in a row from every checking address; DigitalOcean has removed
//     the droplet and its health-check window has passed), and then by the
//     quiet-counter rule: nginx's stub_status request counter, less
//     drover's own status reads and the health checks the health log shows,
//     stays still for one LB check interval with nothing in flight (Reading
//     plus Writing, less the status request itself). A request the
//     LB routed just before it stopped (queued, or in a TLS handshake, which
//     stub_status does not count) is thus served before the switch. Without
//     a health log the LB's checks cannot be told from requests: the
//     healthcheck driver waits its fall window and the in-flight count, and
//     HAProxy its sessions and the in-flight count. The fall window plus
//     DrainTimeout bounds it all: when it passes (a long poll, a large
//     download, an LB that never seems to stop), Drain logs a warning with
//     what was missing and returns nil, like Kubernetes'
//     terminationGracePeriod — a deploy must not be blocked forever by one
//     slow client. Drain returns an
//     error when the LB refuses or ignores the change (a runtime API error, an
//     API error after retries, a health endpoint that still answers 200 with
//     the drain file present) or when ctx ends.
//   - Undrain(ctx) puts the node back and returns nil once the LB sends it
//     traffic again: HAProxy reports the server "UP" (checks passing, no
//     drain or maintenance); the LB's own health checks were seen answered 200
//     HealthyThreshold times in a row from every checking address (nginx's
//     health access log, see HealthLogFormat), or, when no check is seen at
//     all, after the LB's rise window (interval × healthy threshold + margin)
//     with a warning. It returns an error when ctx ends first or when the
//     health endpoint answered the LB with anything but 200.
//   - Drained(ctx) reports the state held by the LB (or the drain file), so
//     an agent restarted mid-rollout learns whether it left the node out.
//   - Drain and Undrain are idempotent: calling either twice, or after a
//     restart with a new driver, is safe and ends in the same state.
//
// Drivers: "none" (single node, development: no-op, never drained),
// "healthcheck" (any LB that polls the node's health endpoint), "haproxy"
// (runtime API, our own small client) and "digitalocean" (godo). The
// DigitalOcean API is retried on 429, 5xx and "can't be updated while it
// processes previous actions" (403), honouring Retry-After and
// RateLimit-Reset.
//
// The nginx side, shared with the config drover renders (HealthCheck.Dir is
// /var/lib/drover/lb here):
//
//	log_format drover_health '$msec $status $remote_addr';
//	server {                                   # the plain-HTTP health port
//	    location = /healthz {
//	        access_log /var/log/nginx/drover-health.log drover_health;
//	        if (-f /var/lib/drover/lb/drain) { return 503; }
//	        root /var/lib/drover/lb;
//	        try_files /up =503;
//	    }
//	}
//	server {                                   # local only: StatusURL
//	    listen 127.0.0.1:8099;
//	    location = /nginx_status { stub_status; }
//	}
package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/drover-dev/drover/spec"
)

// Driver takes this node out of the load balancer's rotation and back. Its
// methods are called one at a time (by the node's rollout).
type Driver interface {
	// Drain returns when the LB sends no new requests and in-flight ones
	// finished (or DrainTimeout passed: nil and a logged warning).
	Drain(ctx context.Context) error
	// Undrain returns when the LB sends this node traffic again.
	Undrain(ctx context.Context) error
	// Drained reports whether the node is out of rotation now.
	Drained(ctx context.Context) (bool, error)
}

// Driver names.
const (
	DriverNone         = "none"
	DriverHealthCheck  = "healthcheck"
	DriverHAProxy      = "haproxy"
	DriverDigitalOcean = "digitalocean"
)

// Config selects and configures a driver; it is the lb section of node.yaml.
type Config struct {
	Driver string `yaml:"driver" json:"driver"`
	// DrainTimeout bounds the wait, after the LB's fall window, for the LB
	// to be seen stopped and nginx to go quiet.
	DrainTimeout time.Duration `yaml:"drainTimeout" json:"drainTimeout"`
	// StatusURL is nginx's stub_status on a local-only listener, e.g.
	// http://127.0.0.1:8099/nginx_status. Required by healthcheck and
	// digitalocean; optional with haproxy (whose session count is the
	// primary proof).
	StatusURL    string            `yaml:"statusURL" json:"statusURL,omitempty"`
	HealthCheck  HealthCheckConfig `yaml:"healthCheck" json:"healthCheck"`
	HAProxy      HAProxyConfig     `yaml:"haproxy" json:"haproxy"`
	DigitalOcean DOConfig          `yaml:"digitalocean" json:"digitalocean"`
}

// HealthCheckConfig describes the node's LB health endpoint and, for the
// healthcheck driver, the LB's own check settings.
//
// The endpoint is served by nginx from Dir: 503 while Dir/drain exists,
// otherwise 200 when Dir/up exists (try_files /up =503). The location logs
// to AccessLog in HealthLogFormat (no buffering), which is how Undrain sees
// the LB's checks reach the node.
type HealthCheckConfig struct {
	// Dir holds the drain and up files (healthcheck driver).
	Dir string `yaml:"dir" json:"dir,omitempty"`
	// AccessLog is the health location's access log; empty: checks are not
	// observed and only the computed windows are waited.
	AccessLog string `yaml:"accessLog" json:"accessLog,omitempty"`
	// The LB's settings (healthcheck driver; digitalocean reads them from
	// the LB).
	CheckInterval      time.Duration `yaml:"checkInterval" json:"checkInterval,omitempty"`
	UnhealthyThreshold int           `yaml:"unhealthyThreshold" json:"unhealthyThreshold,omitempty"`
	HealthyThreshold   int           `yaml:"healthyThreshold" json:"healthyThreshold,omitempty"`
	// Margin is added to computed windows (default: one check interval).
	Margin time.Duration `yaml:"margin" json:"margin,omitempty"`
}

// HAProxyConfig names the runtime API and this node's server.
type HAProxyConfig struct {
	// Socket is a unix socket path or host:port of a `stats socket ... level
	// admin` (or `level operator`).
	Socket  string `yaml:"socket" json:"socket,omitempty"`
	Backend string `yaml:"backend" json:"backend,omitempty"`
	Server  string `yaml:"server" json:"server,omitempty"`
}

// DOConfig names a DigitalOcean load balancer and how to reach the API.
type DOConfig struct {
	LoadBalancerID string `yaml:"loadBalancerID" json:"loadBalancerID,omitempty"`
	// TokenFile holds the API token (read once, by New).
	TokenFile string `yaml:"tokenFile" json:"tokenFile,omitempty"`
	// APIURL is the API's base URL; empty: https://api.digitalocean.com/.
	APIURL string `yaml:"apiURL" json:"apiURL,omitempty"`
	// MetadataURL is the metadata service (empty: http://169.254.169.254);
	// the droplet ID is read
	// from MetadataURL/metadata/v1/id unless DropletID is set.
	MetadataURL string `yaml:"metadataURL" json:"metadataURL,omitempty"`
	DropletID   int    `yaml:"dropletID" json:"dropletID,omitempty"`
	// Margin is added to the LB's health-check windows (default: one check
	// interval plus the response timeout).
	Margin time.Duration `yaml:"margin" json:"margin,omitempty"`
}

// DefaultConfig is the config before node.yaml is applied.
func DefaultConfig() Config {
	return Config{
		Driver:       DriverNone,
		DrainTimeout: 30 * time.Second,
		DigitalOcean: DOConfig{
			APIURL:      "https://api.digitalocean.com/",
			MetadataURL: "http://169.254.169.254",
		},
	}
}

// fieldError is one invalid setting, as spec names it: Field is the
// setting's path under node.yaml's lb section ("haproxy.backend",
// "healthcheck.interval"), so that it reads as spec's message for the same
// field would; the settings drover derives rather than reads from lb
// (statusURL from nginx.statusListen, healthCheck.dir from stateDir,
// drainTimeout, the margins, dropletID) keep Config's own names.
func fieldError(field, problem string) *spec.FieldError {
	return &spec.FieldError{Field: "lb." + field, Msg: problem}
}

// Validate reports every invalid field of the selected driver at once.
// node.yaml's lb section is validated by spec (at least as strictly), so for
// a Config made by ConfigFor this only catches a Config built wrong in
// code: tests, or a caller that fills Config itself.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fieldError(field, fmt.Sprintf(format, args...)))
	}
	switch c.Driver {
	case DriverNone:
		return nil
	case DriverHealthCheck, DriverHAProxy, DriverDigitalOcean:
	case "":
		bad("driver", "is required: one of none, healthcheck, haproxy, digitalocean")
		return errors.Join(errs...)
	default:
		bad("driver", "%q is not one of none, healthcheck, haproxy, digitalocean", c.Driver)
		return errors.Join(errs...)
	}
	if c.DrainTimeout <= 0 {
		bad("drainTimeout", "must be positive, got %s", c.DrainTimeout)
	}
	needStatus := c.Driver != DriverHAProxy
	if c.StatusURL == "" && needStatus {
		bad("statusURL", "is required by the %s driver to wait for in-flight requests (nginx stub_status on a local listener: node.yaml's nginx.statusListen)", c.Driver)
	} else if c.StatusURL != "" {
		if u, err := url.Parse(c.StatusURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("statusURL", "%q is not an http:// URL", c.StatusURL)
		}
	}
	h := c.HealthCheck
	if h.Margin < 0 {
		bad("healthCheck.margin", "must not be negative")
	}
	switch c.Driver {
	case DriverHealthCheck:
		if h.Dir == "" {
			bad("healthCheck.dir", "is required: the directory nginx's health location reads drain and up from")
		}
		if h.CheckInterval <= 0 {
			bad("healthcheck.interval", "must be the LB's check interval, got %s", h.CheckInterval)
		}
		if h.UnhealthyThreshold < 1 {
			bad("healthcheck.unhealthyThreshold", "must be at least 1 (the LB's fall count), got %d", h.UnhealthyThreshold)
		}
		if h.HealthyThreshold < 1 {
			bad("healthcheck.healthyThreshold", "must be at least 1 (the LB's rise count), got %d", h.HealthyThreshold)
		}
	case DriverHAProxy:
		x := c.HAProxy
		if x.Socket == "" {
			bad("haproxy.socket", "is required: a unix socket path or host:port of the runtime API")
		}
		if x.Backend == "" || strings.ContainsAny(x.Backend, "/ \n") {
			bad("haproxy.backend", "%q must be a backend name without spaces or slashes", x.Backend)
		}
		if x.Server == "" || strings.ContainsAny(x.Server, "/ \n") {
			bad("haproxy.server", "%q must be a server name without spaces or slashes", x.Server)
		}
	case DriverDigitalOcean:
		d := c.DigitalOcean
		if d.LoadBalancerID == "" {
			bad("digitalocean.loadBalancerID", "is required")
		}
		if d.TokenFile == "" {
			bad("digitalocean.tokenFile", "is required: a file holding the API token")
		}
		for _, f := range []struct{ field, url string }{
			{"digitalocean.apiURL", d.APIURL}, {"digitalocean.metadataURL", d.MetadataURL},
		} {
			if u, err := url.Parse(f.url); f.url != "" && (err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https")) {
				bad(f.field, "%q is not an http(s) URL", f.url)
			}
		}
		if d.DropletID < 0 {
			bad("digitalocean.dropletID", "must not be negative")
		}
		if d.Margin < 0 {
			bad("digitalocean.margin", "must not be negative")
		}
	}
	return errors.Join(errs...)
}

// New validates cfg and returns its driver. log receives the drivers'
// progress and warnings; nil discards them.
func New(cfg Config, log *slog.Logger) (Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("driver", cfg.Driver)
	switch cfg.Driver {
	case DriverHealthCheck:
		return newHealthCheck(cfg, log), nil
	case DriverHAProxy:
		return newHAProxy(cfg, log), nil
	case DriverDigitalOcean:
		return newDigitalOcean(cfg, log)
	default:
		return none{}, nil
	}
}

// none is the driver of a node without a load balancer.
type none struct{}

func (none) Drain(context.Context) error           { return nil }
func (none) Undrain(context.Context) error         { return nil }
func (none) Drained(context.Context) (bool, error) { return false, nil }

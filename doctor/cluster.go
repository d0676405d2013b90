package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/drover-dev/drover/spec"
)

// maxSkew is how far this node's clock may be from Redis's: the events and
// heartbeats the nodes write carry their own clocks' times.
const maxSkew = time.Second

// cluster checks the Redis the nodes coordinate through: each server (or
// each Sentinel, and the master they name) answers, a quorum is reachable,
// and this node's clock agrees with the master's (TIME).
func (d *doctor) cluster(ctx context.Context) []Result {
	c := d.n.Cluster
	if c == nil {
		return []Result{pass("redis", "no cluster section: a single node, the rollout lock is local")}
	}
	password, err := secret(c.PasswordFile)
	if err != nil {
		return []Result{fail("redis", "make cluster.passwordFile readable by root", "cluster.passwordFile: %v", err)}
	}
	tlsConf, err := redisTLS(c)
	if err != nil {
		return []Result{fail("redis", "check cluster.caFile", "%v", err)}
	}
	opts := func(addr string) *redis.Options {
		return &redis.Options{
			Addr: addr, Username: c.Username, Password: password, DB: c.DB, TLSConfig: tlsConf,
			DialTimeout: d.cfg.Timeout, MaxRetries: -1, DisableIdentity: true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		}
	}
	var masters []string
	var out []Result
	if len(c.SentinelAddrs) > 0 {
		sentinelPassword, err := secret(c.SentinelPasswordFile)
		if err != nil {
			return []Result{fail("sentinel", "make cluster.sentinelPasswordFile readable by root", "cluster.sentinelPasswordFile: %v", err)}
		}
		sctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
		res, master := d.sentinels(sctx, c, func(addr string) *redis.Options {
			o := opts(addr)
			o.Username, o.Password, o.DB = "", sentinelPassword, 0
			return o
		})
		cancel()
		out = append(out, res)
		if master == "" {
			return out
		}
		masters = []string{master}
	} else {
		masters = c.Redis
	}
	// Every master at once: the run stays within one timeout however many
	// are down.
	skews, failed := make([]time.Duration, len(masters)), make([]error, len(masters))
	var wg sync.WaitGroup
	for i, addr := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			skews[i], failed[i] = d.redisTime(ctx, opts(addr))
		}()
	}
	wg.Wait()
	var reached, errs []string
	var worst time.Duration
	worstAddr := ""
	for i, addr := range masters {
		if failed[i] != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", addr, failed[i]))
			continue
		}
		reached = append(reached, addr)
		if worstAddr == "" || skews[i].Abs() > worst.Abs() {
			worst, worstAddr = skews[i], addr
		}
	}
	clock := pass("clock", "within %s of Redis's (%s)", worst.Abs().Round(time.Millisecond), worstAddr)
	if worst.Abs() > maxSkew {
		side := "behind"
		if worst > 0 {
			side = "ahead of"
		}
		clock = fail("clock", "sync this node's clock: apt-get install systemd-timesyncd (or chrony); timedatectl shows the state",
			"this node's clock is %s %s Redis's (%s)", worst.Abs().Round(time.Millisecond), side, worstAddr)
	}
	quorum := len(masters)/2 + 1
	switch {
	case len(reached) < quorum:
		fix := "start redis-server there, or fix cluster.redis; check cluster.passwordFile and the firewall"
		out = append(out, fail("redis", fix, "%d of %d Redis servers answer (%d needed): %s", len(reached), len(masters), quorum, strings.Join(errs, "; ")))
		return out
	case len(errs) > 0:
		out = append(out, warn("redis", "start the missing Redis servers", "%d of %d Redis servers answer: %s", len(reached), len(masters), strings.Join(errs, "; ")))
	default:
		out = append(out, pass("redis", "%s answers", strings.Join(reached, ", ")))
	}
	return append(out, clock)
}

// sentinels asks every Sentinel for the master's address; it fails when none
// answers or none knows the master, and returns the address most give.
func (d *doctor) sentinels(ctx context.Context, c *spec.Cluster, opts func(string) *redis.Options) (Result, string) {
	type answer struct {
		addr, master string
		err          error
	}
	ch := make(chan answer, len(c.SentinelAddrs))
	for _, addr := range c.SentinelAddrs {
		go func() {
			s := redis.NewSentinelClient(opts(addr))
			defer s.Close()
			a, err := s.GetMasterAddrByName(ctx, c.MasterName).Result()
			if err == nil && len(a) == 2 {
				ch <- answer{addr: addr, master: net.JoinHostPort(a[0], a[1])}
				return
			}
			if err == nil || errors.Is(err, redis.Nil) {
				err = errUnknownMaster
			}
			ch <- answer{addr: addr, err: err}
		}()
	}
	votes := map[string]int{}
	var unknown, down []string
	for range c.SentinelAddrs {
		a := <-ch
		switch {
		case a.err == nil:
			votes[a.master]++
		case errors.Is(a.err, errUnknownMaster):
			unknown = append(unknown, a.addr)
		default:
			down = append(down, fmt.Sprintf("%s: %v", a.addr, a.err))
		}
	}
	master, best := "", 0
	for m, n := range votes {
		if n > best {
			master, best = m, n
		}
	}
	n := len(c.SentinelAddrs)
	switch {
	case master == "" && len(unknown) > 0:
		return fail("sentinel", "cluster.masterName must be the name of the Sentinels' `sentinel monitor NAME …` line",
			"no Sentinel knows a master named %q (%s)", c.MasterName, strings.Join(unknown, ", ")), ""
	case master == "":
		return fail("sentinel", "start redis-sentinel on those nodes, or fix cluster.sentinels; check the firewall",
			"no Sentinel answers: %s", strings.Join(down, "; ")), ""
	case len(votes) > 1:
		return warn("sentinel", "the Sentinels disagree (a failover in progress?): check `redis-cli -p 26379 sentinel masters`",
			"master %q is %s for %d of %d Sentinels", c.MasterName, master, best, n), master
	case best < n:
		return warn("sentinel", "start the Sentinels that did not answer, or fix cluster.sentinels",
			"master %q is %s; %d of %d Sentinels answer (%s)", c.MasterName, master, best, n, strings.Join(append(down, unknown...), "; ")), master
	}
	return pass("sentinel", "master %q is %s for all %d Sentinels", c.MasterName, master, n), master
}

var errUnknownMaster = errors.New("unknown master")

// redisTime asks a Redis server its time (TIME) and returns how far this
// node's clock is ahead of it, measured at the middle of the round trip.
func (d *doctor) redisTime(ctx context.Context, o *redis.Options) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	cl := redis.NewClient(o)
	defer cl.Close()
	before := time.Now()
	t, err := cl.Time(ctx).Result()
	if err != nil {
		return 0, err
	}
	return before.Add(time.Since(before) / 2).Sub(t), nil
}

func redisTLS(c *spec.Cluster) (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.caFile: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster.caFile: %s holds no PEM certificate", c.CAFile)
		}
	}
	return conf, nil
}

// secret reads a secret file ("" for none), as the agent does: trailing
// newlines dropped.
func secret(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

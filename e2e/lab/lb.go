package lab

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// LBServer is HAProxy's view of one node.
type LBServer struct {
	Name  string
	State string // UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (coming up), MAINT
}

// Up reports whether HAProxy sends new requests to the node: UP, including
// "UP 1/2" while failed checks have not yet reached fall.
func (s LBServer) Up() bool { return strings.HasPrefix(s.State, "UP") }

// LBServers asks HAProxy's runtime API for the state of every node.
func (l *Lab) LBServers(ctx context.Context) ([]LBServer, error) {
	out, err := l.haproxy(ctx, "show stat")
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("haproxy show stat: %v", err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var servers []LBServer
	for _, rec := range recs[1:] {
		if len(rec) <= col["status"] || rec[col["pxname"]] != "nodes" {
			continue
		}
		if sv := rec[col["svname"]]; sv != "BACKEND" && sv != "FRONTEND" {
			servers = append(servers, LBServer{Name: sv, State: rec[col["status"]]})
		}
	}
	return servers, nil
}

// haproxy sends one command to HAProxy's runtime API.
func (l *Lab) haproxy(ctx context.Context, command string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", l.HAProxySocket())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// SetLog sets where progress lines go.
func (l *Lab) SetLog(f func(format string, args ...any)) { l.cfg.Log = f }

package sysnode

import (
	"context"
	"fmt"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/drover-dev/drover/internal/sdbus"
)

// Dial connects to systemd's private bus at sock (see internal/sdbus).
func Dial(sock string) (*sddbus.Conn, error) { return sdbus.Dial(sock) }

// SystemState is the node's systemd state (starting, running, degraded, ...).
func (n *Node) SystemState(ctx context.Context) (string, error) {
	c, err := Dial(n.Socket())
	if err != nil {
		return "", err
	}
	defer c.Close()
	p, err := c.SystemStateContext(ctx)
	if err != nil {
		return "", err
	}
	s, _ := p.Value.Value().(string)
	return s, nil
}

// UnitState is what systemd says about a unit.
type UnitState struct {
	LoadState   string // loaded, not-found, masked, ...
	ActiveState string // active, activating, failed, inactive, ...
	SubState    string // running, auto-restart, dead, ...
	Result      string // services: success, exit-code, signal, ...
	NRestarts   uint32 // services: automatic restarts
	MainPID     uint32 // services: in the node's PID namespace
}

func (s UnitState) String() string {
	return fmt.Sprintf("%s/%s/%s result=%s restarts=%d pid=%d", s.LoadState, s.ActiveState, s.SubState, s.Result, s.NRestarts, s.MainPID)
}

// UnitState reads unit's state over D-Bus.
func (n *Node) UnitState(ctx context.Context, unit string) (UnitState, error) {
	c, err := Dial(n.Socket())
	if err != nil {
		return UnitState{}, err
	}
	defer c.Close()
	props, err := c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return UnitState{}, fmt.Errorf("unit %s: %w", unit, err)
	}
	s := UnitState{}
	s.LoadState, _ = props["LoadState"].(string)
	s.ActiveState, _ = props["ActiveState"].(string)
	s.SubState, _ = props["SubState"].(string)
	if strings.HasSuffix(unit, ".service") {
		sp, err := c.GetUnitTypePropertiesContext(ctx, unit, "Service")
		if err != nil {
			return s, fmt.Errorf("unit %s: %w", unit, err)
		}
		s.Result, _ = sp["Result"].(string)
		s.NRestarts, _ = sp["NRestarts"].(uint32)
		s.MainPID, _ = sp["MainPID"].(uint32)
	}
	return s, nil
}

// StartUnit starts unit (mode "replace") and waits for the job's result,
// which must be "done".
func (n *Node) StartUnit(ctx context.Context, unit string) error {
	return n.job(ctx, "start", unit, func(c *sddbus.Conn, ch chan<- string) (int, error) {
		return c.StartUnitContext(ctx, unit, "replace", ch)
	})
}

// StopUnit stops unit and waits for the job's result.
func (n *Node) StopUnit(ctx context.Context, unit string) error {
	return n.job(ctx, "stop", unit, func(c *sddbus.Conn, ch chan<- string) (int, error) {
		return c.StopUnitContext(ctx, unit, "replace", ch)
	})
}

// DaemonReload makes the node's systemd reread unit files.
func (n *Node) DaemonReload(ctx context.Context) error {
	c, err := Dial(n.Socket())
	if err != nil {
		return err
	}
	defer c.Close()
	return c.ReloadContext(ctx)
}

func (n *Node) job(ctx context.Context, what, unit string, call func(*sddbus.Conn, chan<- string) (int, error)) error {
	c, err := Dial(n.Socket())
	if err != nil {
		return err
	}
	defer c.Close()
	ch := make(chan string, 1) // buffered: go-systemd's dispatcher never blocks on it
	if _, err := call(c, ch); err != nil {
		return fmt.Errorf("%s %s: %w", what, unit, err)
	}
	select {
	case r := <-ch:
		if r != "done" {
			return fmt.Errorf("%s %s: job %s", what, unit, r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", what, unit, ctx.Err())
	}
}

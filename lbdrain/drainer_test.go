package lbdrain

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The Drainer rebuilds its driver when a call's in-flight timeout differs,
// and keeps it for calls that give none.
func TestDrainerTimeoutPerCall(t *testing.T) {
	c := DefaultConfig()
	l, err := NewDrainer(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.timeout != c.DrainTimeout {
		t.Fatalf("timeout %v, want the config's %v", l.timeout, c.DrainTimeout)
	}
	ctx := context.Background()
	if err := l.Drain(ctx, 7*time.Second); err != nil || l.timeout != 7*time.Second {
		t.Fatalf("Drain(7s): %v, timeout %v", err, l.timeout)
	}
	if err := l.Undrain(ctx); err != nil || l.timeout != 7*time.Second {
		t.Fatalf("Undrain: %v, timeout %v", err, l.timeout)
	}
	if got := l.LastDrainIncomplete(); got != "" {
		t.Errorf("LastDrainIncomplete = %q", got)
	}
}

func TestDrainerBadConfigFailsAtStart(t *testing.T) {
	c := DefaultConfig()
	c.Driver = "f5"
	if _, err := NewDrainer(c, nil); err == nil || !strings.HasPrefix(err.Error(), "lb: ") {
		t.Fatalf("NewDrainer: %v", err)
	}
}

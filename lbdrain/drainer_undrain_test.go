package lbdrain

import (
	"context"
	"os"
	"testing"
)

// Undrain empties a health log past maxHealthLog.
func TestDrainerUndrainTruncatesHealthLog(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "health.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(maxHealthLog + 1); err != nil {
		t.Fatal(err)
	}
	log := f.Name()
	c := DefaultConfig()
	c.HealthCheck.AccessLog = log
	l, err := NewDrainer(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(log); err != nil || fi.Size() != 0 {
		t.Fatalf("health log after undrain: %v, %v", fi, err)
	}
}

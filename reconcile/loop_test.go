package reconcile

import "testing"

// Many pokes while a sync runs give exactly one more sync, not many.
func TestTriggerCoalesces(t *testing.T) {
	tr := NewTrigger()
	for range 100 {
		tr.Poke()
	}
	got := 0
	for {
		select {
		case <-tr.C():
			got++
			continue
		default:
		}
		break
	}
	if got != 1 {
		t.Fatalf("100 pokes gave %d pending syncs, want 1", got)
	}
	tr.Poke()
	select {
	case <-tr.C():
	default:
		t.Fatal("a poke after the pending one was taken is lost")
	}
}

package testsvc

import "testing"

// TestFreePortNeverRepeats: two calls never return the same port, even
// though nothing listens on it in between. Drawn 2,000 times from ~22,000
// ports, a repeat is all but certain without the claim set.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 2000 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	base := FreePorts(t, 3)
	for i := range 3 {
		if seen[base+i] {
			t.Fatalf("FreePorts gave %d, handed out before", base+i)
		}
	}
}

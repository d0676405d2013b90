package cluster

import "fmt"

// What is read from Redis is untrusted input: anything that can reach the
// cluster's Redis can write a node status, a halt, the pause or an event.
// Each value is capped before it is decoded or shown, so that a forged one
// cannot make every agent and `drover status` decode megabytes, and each
// list is capped in length. A capped value errs on the side that keeps
// capacity: an oversized node status makes the registry unreadable (nodes
// wait rather than drain), an oversized halt or pause still halts or pauses.
const (
	// MaxValue bounds one status, halt, pause, pin or lock holder record.
	MaxValue = 64 << 10
	// MaxText bounds one event's message or error as read back.
	MaxText = 4 << 10
	// MaxNodes bounds the registry: a cluster of drover's size has a
	// handful of nodes.
	MaxNodes = 1000
)

// checkValue refuses a value over MaxValue, naming what it was.
func checkValue(what string, v string) error {
	if len(v) > MaxValue {
		return fmt.Errorf("%s in Redis is %d bytes, over the %d-byte cap: refused", what, len(v), MaxValue)
	}
	return nil
}

// clip cuts a text read from Redis to n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes cut)", len(s)-cut)
}

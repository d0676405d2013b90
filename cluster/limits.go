package cluster

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

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
	// MaxHalts bounds the halted revisions read at once (each stays
	// until drover clear): far more than a team leaves halted.
	MaxHalts = 10000
	// MaxHistory bounds the history read back: history.keep is at most
	// 100,000 and the trim keeps to it, so more is forged.
	MaxHistory = 100000 + 1000
)

// countFirst refuses a hash or sorted set of more than max entries before
// it is read whole (n is its HLEN or ZCARD): HGETALL of a forged hash of
// millions of fields would make every agent and drover status read it all
// into memory.
func countFirst(n *redis.IntCmd, what string, max int64) error {
	c, err := n.Result()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if c > max {
		return fmt.Errorf("%s: %d entries in Redis, over the cap of %d: refused", what, c, max)
	}
	return nil
}

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

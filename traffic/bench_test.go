package traffic

import (
	"testing"
	"time"
)

// BenchmarkAddLine is the agent's CPU per request nginx logs.
func BenchmarkAddLine(b *testing.B) {
	c := NewCounter(targets(b))
	c.Reset("r1", nil, time.Unix(0, 0))
	line := []byte("1796172107.764|200|0.004|0.003|app.test|127.0.0.1:3001")
	b.ReportAllocs()
	for b.Loop() {
		c.AddLine(line)
	}
}

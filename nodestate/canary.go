package nodestate

import (
	"fmt"
	"time"
)

// CanaryState is where a canary record is.
type CanaryState string

const (
	CanaryObserving CanaryState = "observing"
	// CanaryPassed: the gate passed and promote is manual.
	CanaryPassed   CanaryState = "passed"
	CanaryPromoted CanaryState = "promoted"
	CanaryFailed   CanaryState = "failed"
	// CanaryAborted: an operator's drover abort.
	CanaryAborted CanaryState = "aborted"
)

// Canary is a revision's canary record: the first node to take a revision
// claims it, the cluster keeps it, and the other nodes wait on it.
type Canary struct {
	Rev  string `json:"rev"`
	Node string `json:"node"`
	// From is the release the canary rolls back to.
	From     string      `json:"from"`
	State    CanaryState `json:"state"`
	Promote  string      `json:"promote"`
	Start    time.Time   `json:"start"`
	Extended bool        `json:"extended,omitempty"`
	// Left is the time to the end of the observation when Updated.
	Left time.Duration `json:"left"`
	// The figures the last judgement used.
	Requests         uint64        `json:"requests"`
	Errors           uint64        `json:"errors"`
	P99              time.Duration `json:"p99"`
	BaselineRequests uint64        `json:"baselineRequests"`
	BaselineErrors   uint64        `json:"baselineErrors"`
	Z                float64       `json:"z"`
	Reason           string        `json:"reason,omitempty"`
	Updated          time.Time     `json:"updated"`
}

// Summary is the record in one line, for drover status.
func (c Canary) Summary() string {
	rate := 0.0
	if c.Requests > 0 {
		rate = float64(c.Errors) / float64(c.Requests)
	}
	s := fmt.Sprintf("canary on %s: %s", c.Node, c.State)
	if c.State == CanaryObserving {
		s += fmt.Sprintf(", %s left", c.Left.Round(time.Second))
	}
	s += fmt.Sprintf(", %d requests, %s errors", c.Requests, FormatRate(rate))
	if c.P99 > 0 {
		s += ", p99 " + c.P99.String()
	}
	if c.Reason != "" && c.State != CanaryObserving {
		s += ": " + c.Reason
	}
	return s
}

// FormatRate writes an error rate (a fraction) as a percentage the way the
// canary's summary and the gate's reasons do: two decimals below 1%, one
// above.
func FormatRate(r float64) string {
	if r < 0.01 {
		return fmt.Sprintf("%.2f%%", 100*r)
	}
	return fmt.Sprintf("%.1f%%", 100*r)
}

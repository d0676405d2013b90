package traffic

import (
	"math"
	"time"
)

// Buckets is the number of latency buckets: bucket i holds latencies up to
// bucketUpper(i), growing by 2^(1/4) (19%) from 1 ms to about 65 s; the last
// one holds everything longer.
const Buckets = 66

// Histogram counts latencies in Buckets buckets.
type Histogram [Buckets]uint32

func bucketOf(d time.Duration) int {
	ms := float64(d) / float64(time.Millisecond)
	if ms <= 1 {
		return 0
	}
	i := int(math.Ceil(4 * math.Log2(ms)))
	return min(i, Buckets-1)
}

// bucketUpper is the longest latency bucket i holds.
func bucketUpper(i int) time.Duration {
	if i >= Buckets-1 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Pow(2, float64(i)/4) * float64(time.Millisecond))
}

// Add counts one latency.
func (h *Histogram) Add(d time.Duration) {
	if h[bucketOf(d)] < math.MaxUint32 {
		h[bucketOf(d)]++
	}
}

// Merge adds o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range h {
		h[i] = uint32(min(uint64(h[i])+uint64(o[i]), math.MaxUint32))
	}
}

// Quantile returns the upper bound of the bucket holding the q-quantile
// (q in (0,1]), so a p99 is never reported better than it was; 0 when
// empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	var total uint64
	for _, c := range h {
		total += uint64(c)
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range h {
		seen += uint64(c)
		if seen >= rank {
			return bucketUpper(i)
		}
	}
	return bucketUpper(Buckets - 1)
}

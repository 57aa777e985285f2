package main

import (
	"math/bits"
	"time"
)

// histogram is a log-linear (HDR-style) latency histogram in microseconds with constant
// memory. Values below 2^histExactBits µs have their own bucket; above, every power of
// two is split into 2^(histExactBits-1) equal buckets, so a bucket is at most 1/128 of
// its values wide and its midpoint is within 0.4% of any value in it.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	maxUs  uint64
}

const (
	histExactBits = 8                                  // values < 256 µs are exact
	histHalf      = 1 << (histExactBits - 1)           // 128 buckets per power of two
	histMaxUs     = 1<<27 - 1                          // ~134 s; larger values share the top bucket
	histMaxShift  = 27 - histExactBits                 // shift of the top power of two
	histBuckets   = histHalf*histMaxShift + 2*histHalf // index of histMaxUs + 1
)

// bucketOf maps a value in µs to its bucket index.
func bucketOf(us uint64) int {
	if us > histMaxUs {
		us = histMaxUs
	}
	if us < 2*histHalf {
		return int(us)
	}
	shift := uint(bits.Len64(us)) - histExactBits
	return int(histHalf*uint64(shift) + us>>shift)
}

// bucketMid is the value that stands for every value in bucket i: its midpoint.
func bucketMid(i int) float64 {
	if i < 2*histHalf {
		return float64(i)
	}
	shift := uint(i/histHalf - 1)
	mantissa := uint64(i - histHalf*int(shift))
	low := mantissa << shift
	width := uint64(1) << shift
	return float64(low) + float64(width-1)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	h.counts[bucketOf(us)]++
	h.total++
	if us > h.maxUs {
		h.maxUs = us
	}
}

func (h *histogram) reset() {
	*h = histogram{}
}

func (h *histogram) add(other *histogram) {
	for i, c := range other.counts {
		h.counts[i] += c
	}
	h.total += other.total
	if other.maxUs > h.maxUs {
		h.maxUs = other.maxUs
	}
}

// quantileMs is the q-quantile (0 < q <= 1) in milliseconds, 0 when empty. It never
// exceeds the largest value recorded.
func (h *histogram) quantileMs(q float64) float64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketMid(i)
			if v > float64(h.maxUs) {
				v = float64(h.maxUs)
			}
			return v / 1000
		}
	}
	return float64(h.maxUs) / 1000
}

func (h *histogram) maxMs() float64 {
	return float64(h.maxUs) / 1000
}

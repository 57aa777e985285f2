package main

import (
	"math"
	"math/rand"
	"sort"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func checkQuantiles(t *testing.T, values []time.Duration) {
	t.Helper()
	var h histogram
	for _, v := range values {
		h.record(v)
	}
	sorted := append([]time.Duration(nil), values...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for _, q := range []float64{0.5, 0.95, 0.99, 0.999, 1} {
		want := float64(exactQuantile(sorted, q)) / float64(time.Millisecond)
		got := h.quantileMs(q)
		if math.Abs(got-want) > 0.01*want+0.001 {
			t.Errorf("q%v = %.4f ms, want %.4f ms within 1%%", q, got, want)
		}
	}
	if want := float64(sorted[len(sorted)-1]/time.Microsecond) / 1000; h.maxMs() != want {
		t.Errorf("max = %v ms, want %v ms", h.maxMs(), want)
	}
}

func TestHistogramQuantilesOfAUniformSpread(t *testing.T) {
	var values []time.Duration
	for us := 1; us <= 100000; us++ {
		values = append(values, time.Duration(us)*time.Microsecond)
	}
	checkQuantiles(t, values)
}

func TestHistogramQuantilesOfALongTail(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var values []time.Duration
	for i := 0; i < 200000; i++ {
		// Log-normal around 5 ms, tail into seconds.
		ms := math.Exp(rng.NormFloat64()*1.2 + math.Log(5))
		values = append(values, time.Duration(ms*float64(time.Millisecond)))
	}
	checkQuantiles(t, values)
}

func TestHistogramBucketsAreContiguousAndNarrow(t *testing.T) {
	prev := 0
	for us := uint64(0); us <= 1<<20; us++ {
		i := bucketOf(us)
		if i != prev && i != prev+1 {
			t.Fatalf("bucketOf(%d) = %d right after bucket %d", us, i, prev)
		}
		prev = i
	}
	for us := uint64(100); us <= histMaxUs; us += 1 + us/1000 {
		if mid := bucketMid(bucketOf(us)); math.Abs(mid-float64(us)) > 0.005*float64(us) {
			t.Fatalf("value %d µs stands as %.1f µs, more than 0.5%% off", us, mid)
		}
	}
	if got := bucketOf(math.MaxUint64); got != histBuckets-1 {
		t.Errorf("a huge value lands in bucket %d, want the top one %d", got, histBuckets-1)
	}
}

func TestHistogramEmptyAndReset(t *testing.T) {
	var h histogram
	if h.quantileMs(0.99) != 0 {
		t.Error("an empty histogram's p99 is not 0")
	}
	h.record(42 * time.Millisecond)
	h.reset()
	if h.total != 0 || h.maxUs != 0 || h.quantileMs(0.5) != 0 {
		t.Error("reset left values behind")
	}
}

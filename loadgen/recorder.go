package main

import (
	"bufio"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Error classes besides HTTP status codes.
const (
	classTimeout    = "timeout"
	classConnection = "connection"
)

// statusClasses holds "100".."599" so that classifying a status does not allocate.
var statusClasses = func() []string {
	classes := make([]string, 600)
	for code := 100; code < 600; code++ {
		classes[code] = strconv.Itoa(code)
	}
	return classes
}()

func statusClass(status int) string {
	if status >= 100 && status < 600 {
		return statusClasses[status]
	}
	return strconv.Itoa(status)
}

// recorder accumulates what the run did. Counters touched on every request are
// atomics; completions take the mutex, which also serialises the acks file.
type recorder struct {
	scheduled    atomic.Int64 // requests handed to the queue or dropped
	dropped      atomic.Int64 // requests not sent: the queue was full
	expired      atomic.Int64 // requests that waited in the queue past their timeout
	cancelled    atomic.Int64 // requests still queued when the run was interrupted
	sentRequests atomic.Int64
	sentEvents   atomic.Int64
	inFlight     atomic.Int64
	firstSend    atomic.Int64 // Unix ns of the first request written, 0 before

	mu            sync.Mutex
	ackedRequests int64
	ackedEvents   int64
	errors        map[string]int64 // requests by error class
	second        *histogram       // latencies of requests acknowledged since the last tick
	whole         histogram        // latencies of every acknowledged request
	lastAck       time.Time
	acks          *bufio.Writer // nil: ids are not written
}

func newRecorder(acks *bufio.Writer) *recorder {
	return &recorder{errors: map[string]int64{}, second: &histogram{}, acks: acks}
}

func (r *recorder) sending(events int, now time.Time) {
	r.inFlight.Add(1)
	r.sentRequests.Add(1)
	r.sentEvents.Add(int64(events))
	if r.firstSend.Load() == 0 {
		r.firstSend.CompareAndSwap(0, now.UnixNano())
	}
}

// acked records a 202: the latency and the request's ids, one per line.
func (r *recorder) acked(events int, latency time.Duration, ids []byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ackedRequests++
	r.ackedEvents += int64(events)
	r.second.record(latency)
	r.whole.record(latency)
	r.lastAck = now
	if r.acks != nil {
		r.acks.Write(ids) // a write error sticks in the Writer and is reported at Flush
	}
}

func (r *recorder) failed(class string) {
	r.mu.Lock()
	r.errors[class]++
	r.mu.Unlock()
}

// totals is a consistent-enough copy of the counters for reporting.
type totals struct {
	scheduled, dropped, expired, cancelled int64
	sentRequests, sentEvents               int64
	ackedRequests, ackedEvents             int64
	errors                                 map[string]int64
	inFlight                               int64
	secondLatency                          *histogram
	p99SoFarMs                             float64
	lastAck                                time.Time
}

// snapshot copies the counters and swaps in spare (emptied) as the per-second
// histogram; the previous one is returned in totals.secondLatency.
func (r *recorder) snapshot(spare *histogram, wholeP99 bool) totals {
	spare.reset()
	t := totals{
		scheduled:    r.scheduled.Load(),
		dropped:      r.dropped.Load(),
		expired:      r.expired.Load(),
		cancelled:    r.cancelled.Load(),
		sentRequests: r.sentRequests.Load(),
		sentEvents:   r.sentEvents.Load(),
		inFlight:     r.inFlight.Load(),
		errors:       map[string]int64{},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.ackedRequests, t.ackedEvents, t.lastAck = r.ackedRequests, r.ackedEvents, r.lastAck
	for class, n := range r.errors {
		t.errors[class] = n
	}
	t.secondLatency, r.second = r.second, spare
	if wholeP99 {
		t.p99SoFarMs = r.whole.quantileMs(0.99)
	}
	return t
}

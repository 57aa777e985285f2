package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// seriesLine is one second of the run, as appended to the series file.
type seriesLine struct {
	T            float64          `json:"t"`        // seconds since start, at the window's end
	Window       float64          `json:"window_s"` // 1 but for the last, partial window
	OfferedRate  float64          `json:"offered_rate"`
	AchievedRate float64          `json:"achieved_rate"`
	Sent         int64            `json:"sent"`
	SentEvents   int64            `json:"sent_events"`
	Errors       map[string]int64 `json:"errors"`
	P50Ms        float64          `json:"p50_ms"`
	P95Ms        float64          `json:"p95_ms"`
	P99Ms        float64          `json:"p99_ms"`
	InFlight     int64            `json:"in_flight"`
	Queued       int              `json:"queued"`
	Dropped      int64            `json:"dropped"`
	CPUCores     float64          `json:"cpu_cores"`
}

// reporter writes a series line and a progress line every second of the run.
type reporter struct {
	d        *driver
	series   io.Writer // nil: no series file
	progress string
	stderr   io.Writer

	prev    totals
	prevAt  time.Duration
	prevCPU time.Duration
	spare   *histogram
	err     error // first series write error
}

func newReporter(d *driver, series io.Writer, progress string, stderr io.Writer, startCPU time.Duration) *reporter {
	return &reporter{
		d: d, series: series, progress: progress, stderr: stderr,
		prev: totals{errors: map[string]int64{}}, prevCPU: startCPU, spare: &histogram{},
	}
}

// loop ticks on whole seconds from the start until stop is closed, then reports the
// last partial second and closes done.
func (rp *reporter) loop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for n := 1; ; n++ {
		next := time.Duration(n) * time.Second
		timer.Reset(time.Until(rp.d.start.Add(next)))
		select {
		case <-timer.C:
			rp.tick(next)
		case <-stop:
			if end := time.Since(rp.d.start); end-rp.prevAt > time.Millisecond {
				rp.tick(end)
			}
			return
		}
	}
}

func (rp *reporter) tick(at time.Duration) {
	t := rp.d.rec.snapshot(rp.spare, rp.progress == progressText)
	cpu := cpuTime()
	window := (at - rp.prevAt).Seconds()
	line := seriesLine{
		T:            roundTo(at.Seconds(), 3),
		Window:       roundTo(window, 3),
		OfferedRate:  roundTo(float64(rp.d.offeredEvents(rp.prevAt, at))/window, 1),
		AchievedRate: roundTo(float64(t.ackedEvents-rp.prev.ackedEvents)/window, 1),
		Sent:         t.sentRequests - rp.prev.sentRequests,
		SentEvents:   t.sentEvents - rp.prev.sentEvents,
		Errors:       diffErrors(t.errors, rp.prev.errors),
		P50Ms:        roundTo(t.secondLatency.quantileMs(0.50), 3),
		P95Ms:        roundTo(t.secondLatency.quantileMs(0.95), 3),
		P99Ms:        roundTo(t.secondLatency.quantileMs(0.99), 3),
		InFlight:     t.inFlight,
		Queued:       len(rp.d.jobs),
		Dropped:      t.dropped - rp.prev.dropped,
		CPUCores:     roundTo((cpu-rp.prevCPU).Seconds()/window, 3),
	}
	rp.spare = t.secondLatency
	rp.prev, rp.prevAt, rp.prevCPU = t, at, cpu

	encoded, _ := json.Marshal(line)
	encoded = append(encoded, '\n')
	if rp.series != nil {
		if _, err := rp.series.Write(encoded); err != nil && rp.err == nil {
			rp.err = err
		}
	}
	switch rp.progress {
	case progressJSON:
		rp.stderr.Write(encoded)
	case progressText:
		if window >= 0.1 { // a few ms at the end make wild rates; the summary follows anyway
			fmt.Fprintln(rp.stderr, progressLine(line, t.p99SoFarMs))
		}
	}
}

// progressLine is the human line, e.g.
// "  12s offered 6667/s achieved 6660/s  p99 so far 41.2 ms  errors {503: 3}  cpu 0.21 core".
func progressLine(l seriesLine, p99SoFarMs float64) string {
	var b strings.Builder
	when := fmt.Sprintf("%4.0fs", l.T)
	if l.Window < 1 {
		when = fmt.Sprintf("%5.1fs", l.T) // the last, partial second
	}
	fmt.Fprintf(&b, "%s offered %.0f/s achieved %.0f/s  p99 so far %.1f ms  errors %s  cpu %.2f core",
		when, l.OfferedRate, l.AchievedRate, p99SoFarMs, formatErrors(l.Errors), l.CPUCores)
	if l.InFlight > 0 || l.Queued > 0 {
		fmt.Fprintf(&b, "  in flight %d queued %d", l.InFlight, l.Queued)
	}
	if l.Dropped > 0 {
		fmt.Fprintf(&b, "  DROPPED %d (driver could not send on time)", l.Dropped)
	}
	return b.String()
}

func formatErrors(errors map[string]int64) string {
	classes := make([]string, 0, len(errors))
	for class := range errors {
		classes = append(classes, class)
	}
	sort.Strings(classes)
	parts := make([]string, len(classes))
	for i, class := range classes {
		parts[i] = fmt.Sprintf("%s: %d", class, errors[class])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func diffErrors(now, before map[string]int64) map[string]int64 {
	diff := map[string]int64{}
	for class, n := range now {
		if d := n - before[class]; d > 0 {
			diff[class] = d
		}
	}
	return diff
}

// offeredEvents is how many events the schedule intended in [from, to), counting
// nothing after an interruption stopped it.
func (d *driver) offeredEvents(from, to time.Duration) int64 {
	if stop := time.Duration(d.stoppedAt.Load()); stop > 0 {
		if to > stop {
			to = stop
		}
		if from > stop {
			from = stop
		}
	}
	n := d.schedule.requestsBefore(to.Seconds()) - d.schedule.requestsBefore(from.Seconds())
	return n * int64(d.plan.BatchSize)
}

// summary is the JSON object printed on stdout at the end.
type summary struct {
	Requests        int64            `json:"requests"` // scheduled: sent, dropped, expired or cancelled
	RequestsSent    int64            `json:"requests_sent"`
	EventsOffered   int64            `json:"events_offered"`
	EventsSent      int64            `json:"events_sent"`
	AckedRequests   int64            `json:"acked_requests"`
	AckedEvents     int64            `json:"acked_events"`
	Dropped         int64            `json:"dropped"`
	ExpiredInQueue  int64            `json:"expired_in_queue"`
	Cancelled       int64            `json:"cancelled"`
	Errors          map[string]int64 `json:"errors"`
	P50Ms           float64          `json:"p50_ms"`
	P95Ms           float64          `json:"p95_ms"`
	P99Ms           float64          `json:"p99_ms"`
	P999Ms          float64          `json:"p999_ms"`
	MaxMs           float64          `json:"max_ms"`
	DurationSeconds float64          `json:"duration_seconds"`
	FirstSend       *string          `json:"first_send"`
	LastAck         *string          `json:"last_ack"`
	CPUSeconds      float64          `json:"cpu_seconds"`
	CPUCores        float64          `json:"cpu_cores"`
	Mode            string           `json:"mode"`
	BatchSize       int              `json:"batch_size"`
	Connections     int              `json:"connections"`
	Run             string           `json:"run"`
	Target          string           `json:"target"`
	Interrupted     bool             `json:"interrupted"`
}

func (d *driver) summarize(duration, cpu time.Duration) summary {
	t := d.rec.snapshot(&histogram{}, false)
	d.rec.mu.Lock()
	whole := d.rec.whole
	d.rec.mu.Unlock()
	s := summary{
		Requests:        t.scheduled,
		RequestsSent:    t.sentRequests,
		EventsOffered:   t.scheduled * int64(d.plan.BatchSize),
		EventsSent:      t.sentEvents,
		AckedRequests:   t.ackedRequests,
		AckedEvents:     t.ackedEvents,
		Dropped:         t.dropped,
		ExpiredInQueue:  t.expired,
		Cancelled:       t.cancelled,
		Errors:          t.errors,
		P50Ms:           roundTo(whole.quantileMs(0.50), 3),
		P95Ms:           roundTo(whole.quantileMs(0.95), 3),
		P99Ms:           roundTo(whole.quantileMs(0.99), 3),
		P999Ms:          roundTo(whole.quantileMs(0.999), 3),
		MaxMs:           roundTo(whole.maxMs(), 3),
		DurationSeconds: roundTo(duration.Seconds(), 3),
		CPUSeconds:      roundTo(cpu.Seconds(), 3),
		CPUCores:        roundTo(cpu.Seconds()/duration.Seconds(), 3),
		Mode:            d.plan.Mode,
		BatchSize:       d.plan.BatchSize,
		Connections:     d.plan.Connections,
		Run:             d.plan.Run,
		Target:          d.plan.Target,
		Interrupted:     d.interrupted.Load(),
	}
	if ns := d.rec.firstSend.Load(); ns != 0 {
		s.FirstSend = formatTime(time.Unix(0, ns))
	}
	if !t.lastAck.IsZero() {
		s.LastAck = formatTime(t.lastAck)
	}
	return s
}

func formatTime(t time.Time) *string {
	s := t.UTC().Format(timeLayout)
	return &s
}

func roundTo(x float64, decimals int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	scale := math.Pow(10, float64(decimals))
	return math.Round(x*scale) / scale
}

package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// job is one request to send. intended is when the schedule wanted it sent, from the
// run's start; its latency counts from there even if it waits in the queue.
type job struct {
	request  int64
	intended time.Duration
}

// driver runs the open model: one scheduler goroutine puts jobs on a bounded queue
// at their intended times, and one worker per connection sends them.
type driver struct {
	plan     *plan
	schedule *schedule
	requests *requestSet
	rec      *recorder
	jobs     chan job
	start    time.Time

	interrupted atomic.Bool
	stoppedAt   atomic.Int64 // offset (ns) at which scheduling stopped early; 0 = it did not
}

func newDriver(p *plan, requests *requestSet, rec *recorder) *driver {
	return &driver{
		plan:     p,
		schedule: newSchedule(p.Profile, p.BatchSize),
		requests: requests,
		rec:      rec,
		jobs:     make(chan job, p.Queue),
	}
}

// connect opens every worker's connection before the clock starts, so that the first
// second does not measure connection setup. A connection that fails here is retried
// by its worker on its first job.
func (d *driver) connect() []*httpConn {
	conns := make([]*httpConn, d.plan.Connections)
	deadline := time.Now().Add(d.plan.Timeout)
	var wg sync.WaitGroup
	for i := range conns {
		conns[i] = newHTTPConn(d.plan.HostPort)
		wg.Add(1)
		go func(c *httpConn) {
			defer wg.Done()
			if err := c.dial(deadline); err != nil {
				c.close()
			}
		}(conns[i])
	}
	wg.Wait()
	return conns
}

// run sends the whole profile and returns when every request is answered, timed out
// or cancelled. Cancelling ctx stops the schedule; requests in flight still finish
// (within their timeout) and queued ones are counted as cancelled. started is called
// once d.start is set.
func (d *driver) run(ctx context.Context, conns []*httpConn, started func()) {
	d.start = time.Now()
	started()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			d.interrupted.Store(true)
		case <-finished:
		}
	}()
	var workers sync.WaitGroup
	for _, c := range conns {
		workers.Add(1)
		go func(c *httpConn) {
			defer workers.Done()
			d.work(c)
		}(c)
	}
	d.scheduleJobs(ctx)
	workers.Wait()
}

// scheduleJobs hands each request to the queue at its intended time. Times come from
// the schedule, never from accumulated sleeps, and a full queue drops the job rather
// than slowing the schedule down.
func (d *driver) scheduleJobs(ctx context.Context) {
	defer close(d.jobs)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for k := int64(0); ; k++ {
		due, ok := d.schedule.at(k)
		if !ok {
			return
		}
		if wait := due - time.Since(d.start); wait > 0 {
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				d.interrupted.Store(true)
				d.stoppedAt.Store(int64(time.Since(d.start)))
				return
			case <-timer.C:
			}
		} else if d.interrupted.Load() {
			d.stoppedAt.Store(int64(time.Since(d.start)))
			return
		}
		d.rec.scheduled.Add(1)
		select {
		case d.jobs <- job{request: k, intended: due}:
		default:
			d.rec.dropped.Add(1)
		}
	}
}

func (d *driver) work(conn *httpConn) {
	defer conn.close()
	builder := requestBuilder{set: d.requests}
	events := d.plan.BatchSize
	for j := range d.jobs {
		if d.interrupted.Load() {
			d.rec.cancelled.Add(1)
			continue
		}
		deadline := d.start.Add(j.intended + d.plan.Timeout)
		now := time.Now()
		if !now.Before(deadline) {
			// A client with this timeout would have given up while it waited.
			d.rec.expired.Add(1)
			d.rec.failed(classTimeout)
			continue
		}
		request := builder.build(j.request, now)
		d.rec.sending(events, now)
		status, err := conn.roundTrip(request, deadline)
		done := time.Now()
		d.rec.inFlight.Add(-1)
		switch {
		case err != nil && isTimeout(err):
			d.rec.failed(classTimeout)
		case err != nil:
			d.rec.failed(classConnection)
		case status == 202:
			d.rec.acked(events, done.Sub(d.start)-j.intended, builder.ids, done)
		default:
			d.rec.failed(statusClass(status))
		}
	}
}

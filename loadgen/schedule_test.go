package main

import (
	"context"
	"math"
	"testing"
	"time"
)

// countPerSecond counts the intended times of a whole schedule by second.
func countPerSecond(t *testing.T, s *schedule) []int {
	t.Helper()
	counts := make([]int, int(math.Ceil(s.end)))
	last := time.Duration(-1)
	for k := int64(0); ; k++ {
		at, ok := s.at(k)
		if !ok {
			break
		}
		if at < last {
			t.Fatalf("request %d intended at %v, before request %d at %v", k, at, k-1, last)
		}
		last = at
		counts[int(at/time.Second)]++
	}
	return counts
}

func TestScheduleSteadyRateGivesTheRateEverySecond(t *testing.T) {
	s := newSchedule([]profilePart{{Seconds: 5, RateStart: 1000, RateEnd: 1000}}, 1)
	if s.requests != 5000 {
		t.Fatalf("requests = %d, want 5000", s.requests)
	}
	for second, n := range countPerSecond(t, s) {
		if n != 1000 {
			t.Errorf("second %d: %d requests, want 1000", second, n)
		}
	}
}

func TestScheduleRampFollowsTheLinearRate(t *testing.T) {
	// 100/s rising to 1000/s over 10 s: second i holds the integral 100 + 90*(i+0.5).
	s := newSchedule([]profilePart{{Seconds: 10, RateStart: 100, RateEnd: 1000}}, 1)
	for second, n := range countPerSecond(t, s) {
		want := 100 + 90*(float64(second)+0.5)
		if math.Abs(float64(n)-want) > 1 {
			t.Errorf("second %d: %d requests, want %.0f ± 1", second, n, want)
		}
	}
	if s.requests != 5500 {
		t.Errorf("requests = %d, want 5500", s.requests)
	}
}

func TestScheduleSpikeOfSeveralPhases(t *testing.T) {
	s := newSchedule([]profilePart{
		{Seconds: 2, RateStart: 100, RateEnd: 100},
		{Seconds: 1, RateStart: 2000, RateEnd: 2000},
		{Seconds: 2, RateStart: 100, RateEnd: 100},
	}, 1)
	want := []int{100, 100, 2000, 100, 100}
	for second, n := range countPerSecond(t, s) {
		if n != want[second] {
			t.Errorf("second %d: %d requests, want %d", second, n, want[second])
		}
	}
}

func TestScheduleBatchModeDividesTheRateByTheBatchSize(t *testing.T) {
	s := newSchedule([]profilePart{{Seconds: 3, RateStart: 13334, RateEnd: 13334}}, 100)
	for second, n := range countPerSecond(t, s) {
		if n < 133 || n > 134 {
			t.Errorf("second %d: %d requests, want 133.34 ± 1", second, n)
		}
	}
}

func TestScheduleDoesNotDriftOver10000Jobs(t *testing.T) {
	s := newSchedule([]profilePart{{Seconds: 10, RateStart: 1000, RateEnd: 1000}}, 1)
	for k := int64(0); k < 10000; k++ {
		at, ok := s.at(k)
		if !ok {
			t.Fatalf("request %d missing", k)
		}
		if want := time.Duration(k) * time.Millisecond; absDuration(at-want) > time.Microsecond {
			t.Fatalf("request %d intended at %v, want %v", k, at, want)
		}
	}
	if _, ok := s.at(10000); ok {
		t.Error("request 10000 is past the profile's end but was scheduled")
	}
}

func TestRequestsBeforeAgreesWithTheIntendedTimes(t *testing.T) {
	s := newSchedule([]profilePart{
		{Seconds: 3, RateStart: 50, RateEnd: 700},
		{Seconds: 2, RateStart: 333, RateEnd: 333},
	}, 1)
	var k int64
	for second := 1; second <= 5; second++ {
		for {
			at, ok := s.at(k)
			if !ok || at >= time.Duration(second)*time.Second {
				break
			}
			k++
		}
		if got := s.requestsBefore(float64(second)); absInt(got-k) > 1 {
			t.Errorf("requestsBefore(%d) = %d, intended times say %d", second, got, k)
		}
	}
}

// The real scheduler loop hands out exactly the schedule's times, in real time, without
// falling behind over 10,000 jobs.
func TestSchedulerLoopKeepsTimeOver10000Jobs(t *testing.T) {
	p := &plan{Profile: []profilePart{{Seconds: 1, RateStart: 10000, RateEnd: 10000}}, BatchSize: 1, Queue: 20000}
	d := newDriver(p, nil, newRecorder(nil))
	d.start = time.Now()
	d.scheduleJobs(context.Background())
	finished := time.Since(d.start)

	if n := len(d.jobs); n != 10000 {
		t.Fatalf("%d jobs queued, want 10000", n)
	}
	for k := int64(0); k < 10000; k++ {
		j := <-d.jobs
		want, _ := d.schedule.at(k)
		if j.request != k || j.intended != want {
			t.Fatalf("job %d = %+v, want request %d intended at %v", k, j, k, want)
		}
	}
	if finished < 999*time.Millisecond || finished > 1500*time.Millisecond {
		t.Errorf("the last job was handed out at %v, want about 1s", finished)
	}
	if dropped := d.rec.dropped.Load(); dropped != 0 {
		t.Errorf("%d jobs dropped with a queue big enough for all", dropped)
	}
}

// A queue that is full drops jobs instead of slowing the schedule down.
func TestSchedulerDropsWhenTheQueueIsFull(t *testing.T) {
	p := &plan{Profile: []profilePart{{Seconds: 0.2, RateStart: 5000, RateEnd: 5000}}, BatchSize: 1, Queue: 100}
	d := newDriver(p, nil, newRecorder(nil))
	d.start = time.Now()
	d.scheduleJobs(context.Background())
	elapsed := time.Since(d.start)
	if got := d.rec.dropped.Load(); got != 900 {
		t.Errorf("dropped = %d, want 900 (1000 scheduled, queue of 100, nobody sending)", got)
	}
	if got := d.rec.scheduled.Load(); got != 1000 {
		t.Errorf("scheduled = %d, want 1000", got)
	}
	if elapsed > time.Second {
		t.Errorf("the schedule took %v with a full queue, want about 200ms", elapsed)
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func absInt(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

package main

import (
	"math"
	"time"
)

// schedule turns a rate profile into intended send times. Request k (0-based) is
// intended at the instant t where the integral of the request rate from 0 to t equals k,
// so times come from the start of the run and never drift, whatever the sleeps did.
type schedule struct {
	phases   []schedPhase
	end      float64 // seconds: the profile's length
	requests int64   // requests in the whole profile
}

// schedPhase is one profile phase in requests/s.
type schedPhase struct {
	start  float64 // seconds since the run's start
	length float64 // seconds
	a, b   float64 // request rate at the phase's start and end
	before float64 // requests intended before the phase starts
}

// countTo is the number of requests intended in the first tau seconds of the phase.
func (p schedPhase) countTo(tau float64) float64 {
	return p.a*tau + (p.b-p.a)*tau*tau/(2*p.length)
}

// timeOf inverts countTo: the offset in the phase at which n requests have been
// intended. This form of the quadratic's root stays exact when a == b.
func (p schedPhase) timeOf(n float64) float64 {
	if n <= 0 {
		return 0
	}
	tau := 2 * n / (p.a + math.Sqrt(p.a*p.a+2*(p.b-p.a)*n/p.length))
	if tau > p.length {
		return p.length
	}
	return tau
}

// countEpsilon absorbs float error when counting requests up to a time, so that 1000/s
// for 1 s counts 1000 and not 1001.
const countEpsilon = 1e-6

// newSchedule builds the schedule of a profile given in events/s; eventsPerRequest is
// the batch size (1 outside batch mode).
func newSchedule(profile []profilePart, eventsPerRequest int) *schedule {
	s := &schedule{}
	perRequest := float64(eventsPerRequest)
	var start, before float64
	for _, part := range profile {
		ph := schedPhase{
			start:  start,
			length: part.Seconds,
			a:      part.RateStart / perRequest,
			b:      part.RateEnd / perRequest,
			before: before,
		}
		s.phases = append(s.phases, ph)
		start += part.Seconds
		before += ph.countTo(ph.length)
	}
	s.end = start
	s.requests = ceilCount(before)
	return s
}

func ceilCount(n float64) int64 {
	c := int64(math.Ceil(n - countEpsilon))
	if c < 0 {
		return 0
	}
	return c
}

// cumulative is the (fractional) number of requests intended before t seconds.
func (s *schedule) cumulative(t float64) float64 {
	if t <= 0 {
		return 0
	}
	for i := len(s.phases) - 1; i >= 0; i-- {
		ph := s.phases[i]
		if t >= ph.start {
			tau := t - ph.start
			if tau > ph.length {
				tau = ph.length
			}
			return ph.before + ph.countTo(tau)
		}
	}
	return 0
}

// requestsBefore counts the requests whose intended time is before t seconds.
func (s *schedule) requestsBefore(t float64) int64 {
	c := ceilCount(s.cumulative(t))
	if c > s.requests {
		return s.requests
	}
	return c
}

// at is the intended time of request k, as an offset from the run's start; ok is false
// past the end of the profile.
func (s *schedule) at(k int64) (offset time.Duration, ok bool) {
	if k < 0 || k >= s.requests {
		return 0, false
	}
	n := float64(k)
	i := len(s.phases) - 1
	for i > 0 && s.phases[i].before > n+countEpsilon {
		i--
	}
	ph := s.phases[i]
	seconds := ph.start + ph.timeOf(n-ph.before)
	return time.Duration(math.Round(seconds * float64(time.Second))), true
}

package store

import "time"

// Queued is how many picks wait for the round trip in flight.
func (s *Store) Queued() int {
	s.co.mu.Lock()
	defer s.co.mu.Unlock()
	return len(s.co.queue)
}

// TallyKeyOf exposes tallyKey to the table test.
var TallyKeyOf = tallyKey

// TripInFlight reports whether a round trip is in flight.
func (s *Store) TripInFlight() bool {
	s.co.mu.Lock()
	defer s.co.mu.Unlock()
	return s.co.inflight > 0
}

// SetTTL shortens how long f's counts live without a renewal, so that a
// test sees a dead dispatcher's counts expire without waiting InflightTTL.
func (f *Inflight) SetTTL(d time.Duration) { f.ttl = d }

// InflightQueued is how many picks wait for f's call in flight.
func (f *Inflight) InflightQueued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}

// InflightBusy reports whether f has a call in flight.
func (f *Inflight) InflightBusy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.busy
}

// SetTimeoutForTest sets how long f's calls may take.
func (f *Inflight) SetTimeoutForTest(d time.Duration) { f.s.stepTimeout = d }

package store

import "time"

// Queued is how many picks wait for the round trip in flight.
func (r *Rotation) Queued() int { return r.steps.Queued() }

// TripInFlight reports whether a round trip is in flight.
func (r *Rotation) TripInFlight() bool { return r.steps.Busy() }

// TallyKeyOf exposes tallyKey to the table test.
var TallyKeyOf = tallyKey

// SetTTL shortens how long f's counts live without a renewal, so that a
// test sees a dead dispatcher's counts expire without waiting InflightTTL.
func (f *Inflight) SetTTL(d time.Duration) { f.ttl = d }

// InflightQueued is how many picks wait for f's call in flight.
func (f *Inflight) InflightQueued() int { return f.calls.Queued() }

// InflightBusy reports whether f has a call in flight.
func (f *Inflight) InflightBusy() bool { return f.calls.Busy() }

// SetTimeoutForTest sets how long f's calls may take.
func (f *Inflight) SetTimeoutForTest(d time.Duration) { f.calls.Timeout = d }

// UploadedForTest is how many candidate lists f has stored in Redis.
func (f *Inflight) UploadedForTest() uint64 { return f.uploaded.Load() }

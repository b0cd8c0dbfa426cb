package main

// SetBackendUp records a health check's verdict on backend (its URL as
// validated), for spread_backend_up and the dashboard's health marks.
func (m *metrics) SetBackendUp(backend string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.backendUp.WithLabelValues(backend).Set(v)
	m.mu.Lock()
	m.up[backend] = up
	m.upVersion++
	m.mu.Unlock()
}

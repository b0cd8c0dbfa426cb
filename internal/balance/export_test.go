package balance

import "net/url"

// NewBackend is a pick of u (entry as the list holds it) by a strategy
// that hears, through by, how the request ends: for tests of pickers made
// outside the package.
func NewBackend(u *url.URL, entry string, by Finisher) Backend {
	return Backend{URL: u, Entry: entry, by: by}
}

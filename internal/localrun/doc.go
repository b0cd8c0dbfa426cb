// Package localrun runs the project's programs and their peers (redis-server,
// the backends, the dispatchers, HAProxy, nginx, Caddy) as local processes on
// loopback ports, for the bench and the lab: it builds the programs from the
// checkout, starts each with its output in a log file of its own, waits until
// it answers, and stops them all with SIGTERM, last started first.
package localrun

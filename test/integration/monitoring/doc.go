// Package monitoring tests what deploy/monitoring ships: the Grafana
// dashboards and the alert rules. A fast test checks the dashboards' JSON
// alone; the other runs a real Prometheus that scrapes real members of the
// LargeData operator on a local control plane during a short load with a
// scale event, then evaluates every panel's queries and every alert rule
// through Prometheus's HTTP API. That test needs the prometheus binary
// (Debian's package) and skips without it.
package monitoring

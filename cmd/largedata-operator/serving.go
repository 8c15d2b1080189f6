package main

import (
	"crypto/tls"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// The metrics endpoint authenticates every scrape with a TokenReview and
// authorizes it with a SubjectAccessReview (get on the non-resource URL
// /metrics: the ClusterRole metrics-reader grants it to a scraper). With
// --peer-address it also serves the snapshots the replicas ask each other
// for, which their own role lets them get.
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:urls=/kubeshard/v1/snapshot,verbs=get

// metricsOptions serves the metrics on addr: over HTTPS behind the API
// server's authentication and authorization when secure (the certificate in
// certDir, or a self-signed one), else plain HTTP for anyone who reaches it.
func metricsOptions(addr string, secure bool, certDir string, http2 bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr}
	if secure {
		opts.SecureServing = true
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
		opts.CertDir = certDir
		opts.TLSOpts = tlsOptions(http2)
	}
	return opts
}

// webhookServer serves the slot-label webhook on host:port ("" for every
// interface).
func webhookServer(host string, port int, certDir string, http2 bool) webhook.Server {
	return webhook.NewServer(webhook.Options{Host: host, Port: port, CertDir: certDir, TLSOpts: tlsOptions(http2)})
}

// tlsOptions turn HTTP/2 off unless http2: its stream handling let a client
// make a server spend without bound (CVE-2023-44487, "rapid reset"), and
// neither the metrics nor the webhook server needs it.
func tlsOptions(http2 bool) []func(*tls.Config) {
	if http2 {
		return nil
	}
	return []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
}

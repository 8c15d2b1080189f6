package sharding

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// counter is a cache that can count the objects it holds per kind, and
// those of a handover that wait for delivery; the cache that shardcache
// returns is one.
type counter interface {
	Counts() map[schema.GroupVersionKind]int
	HandoverPending() int
}

// cachedObjects exports the objects a member's cache holds, per kind,
// counted when Prometheus scrapes: the figure that shows memory spreading
// across members.
type cachedObjects struct {
	ring, member string
	cache        counter
	desc         *prometheus.Desc
	pending      *prometheus.Desc
}

func newCachedObjects(ring, member string, c counter) *cachedObjects {
	return &cachedObjects{ring: ring, member: member, cache: c, desc: prometheus.NewDesc(
		"kubeshard_member_cached_objects",
		"Objects of the sharded kinds in this member's cache (only its served slots).",
		[]string{"ring", "member", "kind"}, nil),
		pending: prometheus.NewDesc(
			"kubeshard_member_handover_pending_objects",
			"Objects of slots this member took over in a handover that wait to be delivered to its controllers (Options.HandoverRate).",
			[]string{"ring", "member"}, nil),
	}
}

func (c *cachedObjects) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.pending
}

func (c *cachedObjects) Collect(ch chan<- prometheus.Metric) {
	for gvk, n := range c.cache.Counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), c.ring, c.member, gvk.GroupKind().String())
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(c.cache.HandoverPending()), c.ring, c.member)
}

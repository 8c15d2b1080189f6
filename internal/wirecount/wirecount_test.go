package wirecount

import "testing"

func TestResourceNamesTheResourceAndSubresource(t *testing.T) {
	for path, want := range map[string]string{
		"/apis/coordination.k8s.io/v1/namespaces/ops/leases/largedata-op-0":           "leases",
		"/apis/sharding.kubeshard.dev/v1alpha1/namespaces/ops/shardrings/ring/status": "shardrings/status",
		"/apis/data.kubeshard.dev/v1alpha1/namespaces/team-a/largedata":               "largedata",
		"/api/v1/namespaces": "/api/v1/namespaces",
	} {
		if got := Resource(path); got != want {
			t.Errorf("Resource(%q) = %q, want %q", path, got, want)
		}
	}
}

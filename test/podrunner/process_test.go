package podrunner

import (
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"HEALTH_PORT": "8081", "POD_NAME": "op-0"}
	for _, tc := range []struct{ in, want string }{
		{"--health-probe-bind-address=:$(HEALTH_PORT)", "--health-probe-bind-address=:8081"},
		{"$(POD_NAME)-$(HEALTH_PORT)", "op-0-8081"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},          // kept, as a kubelet does
		{"$$(HEALTH_PORT)", "$(HEALTH_PORT)"}, // escaped
		{"$$", "$"},
		{"cost: $5", "cost: $5"},
		{"trailing $", "trailing $"},
		{"$(HEALTH_PORT", "$(HEALTH_PORT"}, // unterminated
		{"", ""},
	} {
		if got := expand(tc.in, vars); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestEnvironment checks what a process sees: the container's env with
// references and fieldRefs resolved, the runner's variables over the
// container's, ExtraEnv over everything, and the test process's environment
// underneath.
func TestEnvironment(t *testing.T) {
	t.Setenv("PODRUNNER_TEST_INHERITED", "yes")
	w := &podWorker{
		r: &Runner{opts: Options{
			Kubeconfig: "/kubeconfig",
			NodeName:   "local",
			ExtraEnv:   []string{"OVERRIDE=extra"},
		}},
		log:   logr.Discard(),
		ports: Ports{Metrics: 1, Health: 2, Webhook: 3},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "op-0", Namespace: "ns", UID: "uid-1"}}
	container := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "GREETING", Value: "hi $(POD_NAME)"},
		{Name: "ECHO", Value: "$(GREETING)!"},
		{Name: "HEALTH_PORT", Value: "8081"}, // the runner's port wins
		{Name: "OVERRIDE", Value: "container"},
		{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
	}}
	env, vars := w.environment(pod, container)

	// exec keeps the last of duplicate names; so does this.
	got := map[string]string{}
	for _, kv := range env {
		if name, value, ok := strings.Cut(kv, "="); ok {
			got[name] = value
		}
	}
	want := map[string]string{
		"PODRUNNER_TEST_INHERITED": "yes",
		"POD_NAME":                 "op-0",
		"POD_NAMESPACE":            "ns",
		"KUBECONFIG":               "/kubeconfig",
		"METRICS_PORT":             "1",
		"HEALTH_PORT":              "2",
		"WEBHOOK_PORT":             "3",
		"GREETING":                 "hi op-0",
		"ECHO":                     "hi op-0!",
		"OVERRIDE":                 "extra",
		"NODE":                     "local",
		"IP":                       "127.0.0.1",
	}
	for name, value := range want {
		if got[name] != value {
			t.Errorf("%s=%q, want %q", name, got[name], value)
		}
	}
	if _, ok := got["SECRET"]; ok {
		t.Errorf("SECRET is set, want it skipped")
	}
	if vars["HEALTH_PORT"] != "2" || vars["OVERRIDE"] != "extra" {
		t.Errorf("args would expand HEALTH_PORT to %q and OVERRIDE to %q", vars["HEALTH_PORT"], vars["OVERRIDE"])
	}
}

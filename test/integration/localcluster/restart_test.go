package localcluster

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeshard/kubeshard/test/localcluster"
)

// TestRestartAPIServer checks that a restarted kube-apiserver is the same
// server to its clients: same URL and certificates, so a client created
// before the restart can write after it, and an informer reconnects on its
// own and sees what was written.
func TestRestartAPIServer(t *testing.T) {
	ctx := testContext(t)
	cluster := startCluster(ctx, t)
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	create := func(ctx context.Context, name string) error {
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx,
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		return err
	}
	if err := create(ctx, "before"); err != nil {
		t.Fatal(err)
	}

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"))
	configMaps := factory.Core().V1().ConfigMaps()
	informer := configMaps.Informer()
	informerCtx, stopInformer := context.WithCancel(ctx)
	factory.Start(informerCtx.Done())
	t.Cleanup(func() {
		stopInformer()
		factory.Shutdown()
	})
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatal("informer did not sync")
	}

	oldPID, _ := cluster.PID(localcluster.APIServer)
	url := cluster.APIServerURL()
	if err := cluster.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	newPID, ok := cluster.PID(localcluster.APIServer)
	if !ok || newPID == oldPID {
		t.Fatalf("kube-apiserver pid %d before the restart, %d (running %t) after", oldPID, newPID, ok)
	}
	checkGone(t, "the old kube-apiserver", oldPID)
	if cluster.APIServerURL() != url {
		t.Fatalf("URL changed from %s to %s", url, cluster.APIServerURL())
	}

	// The first request may meet the connection the old server closed;
	// client-go does not retry a create, so neither would an operator's
	// first write, and the next one must succeed.
	eventually(ctx, t, timeout, "Created a ConfigMap after the restart", func(ctx context.Context) error {
		return create(ctx, "after")
	})
	eventually(ctx, t, timeout, "Informer saw the ConfigMap created after the restart", func(context.Context) error {
		if _, err := configMaps.Lister().ConfigMaps("default").Get("after"); err != nil {
			return err
		}
		return nil
	})
	got, err := cluster.Kubectl(ctx, "get", "configmaps", "-n", "default", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "configmap/before") || !strings.Contains(string(got), "configmap/after") {
		t.Fatalf("kubectl get configmaps: %s", got)
	}
	if _, ok := cluster.PID(localcluster.ControllerManager); !ok {
		t.Fatal(errors.New("kube-controller-manager exited during the restart"))
	}
}

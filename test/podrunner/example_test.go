package podrunner_test

import (
	"context"
	"syscall"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeshard/kubeshard/test/localcluster"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

// An end-to-end test starts a control plane, runs the operator's StatefulSet
// pods as processes of the operator binary, and crashes one of them.
func Example() {
	ctx := context.Background() // t.Context() in a test
	cluster, err := localcluster.Start(ctx, localcluster.Options{})
	if err != nil {
		panic(err)
	}
	defer func() { _ = cluster.Stop() }()

	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		panic(err)
	}
	runner, err := podrunner.New(podrunner.Options{
		Client:     cs,
		Namespace:  "operator-system",
		Selector:   labels.SelectorFromSet(labels.Set{"app": "largedata-operator"}),
		Binary:     "bin/largedata-operator", // args from the pod spec, e.g. --metrics-bind-address=:$(METRICS_PORT)
		Kubeconfig: cluster.KubeconfigPath,
	})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- runner.Run(runCtx) }()

	// ... create the namespace and the StatefulSet, wait for Ready pods ...

	_ = runner.Signal("largedata-operator-1", syscall.SIGKILL) // restarted after a second

	stop()
	if err := <-done; err != nil { // every process has exited
		panic(err)
	}
}

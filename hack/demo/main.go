// Command demo starts a local control plane (etcd and kube-apiserver from
// bin/k8s) with the kubeshard CRDs installed, writes a kubeconfig for it and
// keeps it running until Ctrl-C. `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("Starting etcd and kube-apiserver on loopback ...")
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\nStopping the control plane ...")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
	}()

	user, err := env.Env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("creating the demo user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	path := filepath.Join(root, "bin", "demo", "kubeconfig")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}

	// A ring and a dataset so that `kubectl get` shows something.
	ring := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: "largedata", Namespace: "default"},
		Spec: shardingv1alpha1.ShardRingSpec{Resources: []shardingv1alpha1.ShardedResource{{
			GroupResource: shardingv1alpha1.GroupResource{Group: datav1alpha1.GroupVersion.Group, Resource: "largedata"},
			Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
		}}},
	}
	if err := env.Client.Create(ctx, ring); err != nil {
		return fmt.Errorf("creating the demo ShardRing: %w", err)
	}
	ld := &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Name: "example", Namespace: "default"},
		Spec:       datav1alpha1.LargeDataSpec{Items: 100_000, Seed: 1},
	}
	if err := env.Client.Create(ctx, ld); err != nil {
		return fmt.Errorf("creating the demo LargeData: %w", err)
	}

	kubectl := filepath.Join(root, "bin", "k8s", "kubectl")
	fmt.Printf(`
The local control plane is running (API server %s).

  export KUBECONFIG=%s
  %s get shardrings,largedata -A

This stage of kubeshard has the CRDs only; the operator and the sharded demo
come with later issues. Press Ctrl-C to stop.
`, env.Config.Host, path, kubectl)
	<-ctx.Done()
	return nil
}

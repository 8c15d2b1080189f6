package localcluster

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testpg"
	"github.com/kubeshard/kubeshard/test/localcluster"
)

// TestClusterOnKine runs the control plane on kine over PostgreSQL instead of
// etcd: an object written through the API server is a row of kine's table,
// and survives a restart of the API server, which keeps nothing itself.
func TestClusterOnKine(t *testing.T) {
	ctx := testContext(t)
	pg, err := testpg.Start(ctx, testpg.Options{Database: "kine"})
	if errors.Is(err, testpg.ErrNotInstalled) {
		testenv.MissingDependency(t, "PostgreSQL (the Debian package postgresql)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	dir := t.TempDir()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, KineDatabase: pg.URL()})
	if err != nil {
		t.Fatalf("starting the cluster on kine: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
		logTails(t, dir)
	})
	if _, ok := c.PID(localcluster.Etcd); ok {
		t.Error("an etcd runs beside kine")
	}
	k, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "stored-in-postgres"}, Data: map[string]string{"k": "v"}}
	if err := k.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM kine WHERE name = $1 AND deleted = 0",
		"/registry/configmaps/default/stored-in-postgres").Scan(&rows); err != nil {
		t.Fatalf("reading kine's table: %v", err)
	}
	if rows == 0 {
		t.Fatal("the ConfigMap the API server accepted is not in kine's table")
	}

	if err := c.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	got := &corev1.ConfigMap{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = k.Get(ctx, client.ObjectKeyFromObject(cm), got)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || got.Data["k"] != "v" {
		t.Errorf("after an API server restart: %v, data %v; want the ConfigMap back from kine", err, got.Data)
	}
}

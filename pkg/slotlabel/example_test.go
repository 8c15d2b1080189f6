package slotlabel_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// A reconciler labels a child before it creates it, so that the member that
// serves the owner sees the child in its cache at once.
func ExampleLabelChild() {
	// The owner as the member read it, labelled by the webhook.
	owner := &testkind.Widget{ObjectMeta: metav1.ObjectMeta{
		Namespace: "team-a", Name: "dataset-1",
		Labels: map[string]string{shardingv1alpha1.LabelSlot: "327"},
	}}
	summary := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "dataset-1-summary"}}

	// Also set the controller reference (controllerutil.SetControllerReference),
	// then create the child.
	slotlabel.LabelChild(owner, summary, ring.DefaultSlots)
	fmt.Println(summary.Labels[shardingv1alpha1.LabelSlot])
	// Output: 327
}

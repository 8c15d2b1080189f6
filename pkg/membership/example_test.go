package membership_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// A member's wiring in main: Run until the manager stops or the member fences
// itself, and release the Lease on a graceful leave.
func ExampleMember() {
	run := func(ctx context.Context, c client.Client, stopServing func()) error {
		member, err := membership.NewMember(c, membership.Options{
			Ring:      "widgets",
			Namespace: "operators",
			Name:      os.Getenv("POD_NAME"),
			OnFenced:  stopServing,
		})
		if err != nil {
			return err
		}
		if err := member.Run(ctx); errors.Is(err, membership.ErrFenced) {
			return err // exit non-zero: the pod restarts with a fresh Member
		}
		stopServing() // and wait for in-flight reconciles
		// ctx is done by now; the release gets a context of its own.
		return member.Release(context.WithoutCancel(ctx))
	}
	_ = run
}

// The coordinator feeds every Lease event to a Tracker and asks it who is live.
// The member's clock is an hour ahead here, which changes nothing: expiry is
// measured from when the coordinator saw the Lease change.
func ExampleTracker() {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakeClock(now)
	tracker := membership.NewTracker(membership.TrackerOptions{Ring: "widgets", Clock: clock})

	tracker.Observe(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:            membership.LeaseName("widgets", "op-0"),
			ResourceVersion: "41",
			Labels:          map[string]string{shardingv1alpha1.LabelRing: "widgets", membership.LabelMember: "op-0"},
			Annotations:     map[string]string{shardingv1alpha1.AnnotationServing: "0-511"},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("op-0"),
			LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime:            ptr.To(metav1.NewMicroTime(now.Add(time.Hour))),
		},
	})
	expiry, _ := tracker.NextExpiry()
	fmt.Println("requeue after", expiry.Sub(clock.Now()))

	for _, step := range []time.Duration{0, 15 * time.Second} {
		clock.Step(step)
		for _, m := range tracker.Members() {
			fmt.Printf("%s live=%v expired=%v serving=%d slots\n", m.Name, m.Live, m.Expired, len(m.Serving))
		}
	}
	// Output:
	// requeue after 15s
	// op-0 live=true expired=false serving=512 slots
	// op-0 live=false expired=true serving=512 slots
}

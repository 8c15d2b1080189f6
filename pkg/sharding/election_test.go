package sharding

import (
	"context"
	"testing"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// fakeLock is a Lease lock in memory that counts its writes.
type fakeLock struct {
	rec    resourcelock.LeaderElectionRecord
	id     string
	writes int
}

func (f *fakeLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec := f.rec
	return &rec, []byte(rec.HolderIdentity), nil
}
func (f *fakeLock) Create(_ context.Context, rec resourcelock.LeaderElectionRecord) error {
	f.rec = rec
	f.writes++
	return nil
}
func (f *fakeLock) Update(_ context.Context, rec resourcelock.LeaderElectionRecord) error {
	f.rec = rec
	f.writes++
	return nil
}
func (f *fakeLock) RecordEvent(string) {}
func (f *fakeLock) Identity() string   { return f.id }
func (f *fakeLock) Describe() string   { return "ns/ring-coordinator" }

// A replica that stops releases the election's Lease when it holds it, and
// leaves it alone when a successor took it over while this replica was
// paused (client-go decides to release from its own last observation).
func TestTheElectionReleasesOnlyItsOwnLease(t *testing.T) {
	for _, tc := range []struct {
		name      string
		holder    string
		wantWrite bool
	}{
		{"held by this replica", "me", true},
		{"taken over by a successor", "successor", false},
		{"already released", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeLock{id: "me", rec: resourcelock.LeaderElectionRecord{HolderIdentity: tc.holder}}
			lock := &ownRelease{Interface: inner}
			// client-go's release: read the Lease, then write a record without a holder.
			if _, _, err := lock.Get(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := lock.Update(t.Context(), resourcelock.LeaderElectionRecord{LeaseDurationSeconds: 1}); err != nil {
				t.Fatal(err)
			}
			if wrote := inner.writes == 1; wrote != tc.wantWrite {
				t.Errorf("release of a Lease held by %q: wrote %v, want %v", tc.holder, wrote, tc.wantWrite)
			}
			if !tc.wantWrite && inner.rec.HolderIdentity != tc.holder {
				t.Errorf("the Lease is held by %q after the release, want still %q", inner.rec.HolderIdentity, tc.holder)
			}
		})
	}
	// Renewals and acquisitions are written whoever held the Lease last.
	inner := &fakeLock{id: "me", rec: resourcelock.LeaderElectionRecord{HolderIdentity: "other"}}
	lock := &ownRelease{Interface: inner}
	_, _, _ = lock.Get(t.Context())
	if err := lock.Update(t.Context(), resourcelock.LeaderElectionRecord{HolderIdentity: "me"}); err != nil || inner.writes != 1 {
		t.Errorf("taking the Lease over: %v, %d writes; want it written", err, inner.writes)
	}
}

package largedata_test

import (
	"testing"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata"
)

func TestTransform(t *testing.T) {
	for _, tc := range []struct {
		processing datav1alpha1.Processing
		payload    string
		want       string
	}{
		// sha256("a91867c7e1cc961d"), computed outside Go.
		{datav1alpha1.ProcessingChecksum, "a91867c7e1cc961d", "0c922257686939d158f51774a5040f573d456d5ff3c0d5844cac2df139ce0cbe"},
		{datav1alpha1.ProcessingUppercase, "a91867c7e1cc961d", "A91867C7E1CC961D"},
		{datav1alpha1.ProcessingReverse, "a91867c7e1cc961d", "d169cc1e7c76819a"},
	} {
		fn, ok := largedata.Transform(tc.processing)
		if !ok {
			t.Fatalf("Transform(%s): unknown", tc.processing)
		}
		if got, err := fn(tc.payload); err != nil || got != tc.want {
			t.Errorf("%s(%q) = %q, %v; want %q", tc.processing, tc.payload, got, err, tc.want)
		}
	}
	if _, ok := largedata.Transform("Compress"); ok {
		t.Error("Transform(Compress) is known, want unknown")
	}
}

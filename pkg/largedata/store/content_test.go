package store_test

import (
	"testing"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

func TestPayload(t *testing.T) {
	// Vectors computed outside Go (Python's hashlib), the same as
	// PostgreSQL's left(md5('42:0'), 16): both stores must agree on content.
	for _, tc := range []struct {
		seed, index int64
		want        string
	}{
		{42, 0, "a91867c7e1cc961d"},
		{-7, 123, "0ae66755cf1b8095"},
	} {
		if got := store.Payload(tc.seed, tc.index); got != tc.want {
			t.Errorf("Payload(%d, %d) = %q, want %q", tc.seed, tc.index, got, tc.want)
		}
	}
	if len(store.Payload(1, 1)) != store.PayloadLen {
		t.Errorf("payload length %d, want %d", len(store.Payload(1, 1)), store.PayloadLen)
	}
}

func TestRecordHash(t *testing.T) {
	// First 8 bytes of sha256("5:ABC").
	if got, want := store.RecordHash(5, "ABC"), uint64(0x94a3b55089c9026e); got != want {
		t.Errorf("RecordHash(5, ABC) = %016x, want %016x", got, want)
	}
	if store.RecordHash(1, "x") == store.RecordHash(2, "x") {
		t.Error("RecordHash ignores the index: swapping two results would keep the checksum")
	}
}

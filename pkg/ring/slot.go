package ring

import "github.com/cespare/xxhash/v2"

// DefaultSlots is the number of slots of a ring that does not choose one: enough
// that 64 members still own 16 slots each, so the busiest member holds only a few
// percent more objects than the mean, and few enough that the whole assignment
// fits comfortably in one status object.
const DefaultSlots = 1024

// keyBufSize covers namespace/name of almost every object (namespaces are at
// most 63 bytes, most names are shorter than 64) while keeping the stack buffer
// cheap to zero; longer keys take the streaming path, which is slower but still
// allocation free.
const keyBufSize = 128

// Slot returns the slot of the object namespace/name in a ring of the given
// number of slots: xxhash64(namespace + "/" + name) mod slots, or
// xxhash64(name) mod slots for a cluster-scoped object (namespace == "").
//
// This is exactly what consistent.FindPartitionID returns with Hasher and
// PartitionCount = slots, so the slot label and the ring always agree. The key is
// never built as a Go string because this runs for every object the webhook and
// the labeler see: a concatenation would allocate.
//
// Slot returns -1 when slots < 1: no object can have a slot then, and -1 fails
// loudly in any label or index instead of quietly piling everything into slot 0.
func Slot(namespace, name string, slots int) int {
	if slots < 1 {
		return -1
	}
	var h uint64
	switch {
	case namespace == "":
		h = xxhash.Sum64String(name)
	case len(namespace)+1+len(name) <= keyBufSize:
		var buf [keyBufSize]byte
		n := copy(buf[:], namespace)
		buf[n] = '/'
		n++
		n += copy(buf[n:], name)
		h = xxhash.Sum64(buf[:n])
	default:
		var d xxhash.Digest
		d.Reset()
		_, _ = d.WriteString(namespace) // Digest writes never fail.
		_, _ = d.WriteString("/")
		_, _ = d.WriteString(name)
		h = d.Sum64()
	}
	return int(h % uint64(slots))
}

// Hasher is the consistent.Hasher of every ring: xxhash64 of the key. It is
// exported so that code comparing against a plain consistent ring (benchmarks,
// tests in other packages) hashes exactly as Slot and Assign do.
type Hasher struct{}

// Sum64 returns xxhash64 of data.
func (Hasher) Sum64(data []byte) uint64 { return xxhash.Sum64(data) }

package store

import (
	"crypto/md5" //nolint:gosec // a content generator, not a security boundary; PostgreSQL has md5() built in
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// PayloadLen is the length of every payload: 16 hexadecimal digits.
const PayloadLen = 16

// Payload is the content of record index of a dataset with the given seed:
// the first 16 hexadecimal digits of the MD5 of "<seed>:<index>", both in
// decimal. PostgreSQL computes the same with
// left(md5(seed::text || ':' || index::text), 16), so the postgres store
// creates records without sending their content over the network.
func Payload(seed, index int64) string {
	buf := make([]byte, 0, 41)
	buf = strconv.AppendInt(buf, seed, 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, index, 10)
	sum := md5.Sum(buf) //nolint:gosec // see the import
	return hex.EncodeToString(sum[:PayloadLen/2])
}

// RecordHash is a record's contribution to its dataset's checksum: the first
// eight bytes, big-endian, of the SHA-256 of "<index>:<result>". The index is
// part of it so that swapping two results changes the checksum.
func RecordHash(index int64, result string) uint64 {
	h := sha256.New()
	var buf [20]byte
	h.Write(strconv.AppendInt(buf[:0], index, 10))
	h.Write([]byte{':'})
	h.Write([]byte(result))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format of a probe datagram (UDP payload), big endian:
//
//	0  magic   "NAPB" (4 bytes)
//	4  version 1
//	5  kind    1 = request, 2 = reply
//	6  size    uint16: the whole payload's length, header included
//	8  seq     uint64: chosen by the prober, echoed
//	16 sent    int64: the prober's send time (Unix ns), echoed
//	24 padding up to size (a fixed pattern, not checked)
//
// A reply is the request with kind 2, byte for byte the same length: the
// large probe tests the path in both directions.
const (
	headerLen   = 24
	wireVersion = 1
	kindRequest = 1
	kindReply   = 2
)

var magic = [4]byte{'N', 'A', 'P', 'B'}

// errBadDatagram is wrapped by every error about a datagram that is not a
// well-formed probe.
var errBadDatagram = errors.New("probe: not a probe datagram")

// header is the fixed part of a probe datagram.
type header struct {
	kind byte
	size int
	seq  uint64
	sent int64
}

// encode writes h and the padding into buf[:h.size]; buf must hold it.
func (h header) encode(buf []byte) []byte {
	b := buf[:h.size]
	copy(b, magic[:])
	b[4] = wireVersion
	b[5] = h.kind
	binary.BigEndian.PutUint16(b[6:], uint16(h.size))
	binary.BigEndian.PutUint64(b[8:], h.seq)
	binary.BigEndian.PutUint64(b[16:], uint64(h.sent))
	for i := headerLen; i < len(b); i++ {
		b[i] = byte(i) ^ 0x5a
	}
	return b
}

// parse reads the header of datagram b and checks it is a probe whose
// declared size is its length.
func parse(b []byte) (header, error) {
	if len(b) < headerLen {
		return header{}, fmt.Errorf("%w: %d bytes", errBadDatagram, len(b))
	}
	if [4]byte(b[:4]) != magic || b[4] != wireVersion {
		return header{}, fmt.Errorf("%w: bad magic or version", errBadDatagram)
	}
	h := header{
		kind: b[5],
		size: int(binary.BigEndian.Uint16(b[6:])),
		seq:  binary.BigEndian.Uint64(b[8:]),
		sent: int64(binary.BigEndian.Uint64(b[16:])),
	}
	if h.kind != kindRequest && h.kind != kindReply {
		return header{}, fmt.Errorf("%w: kind %d", errBadDatagram, h.kind)
	}
	if h.size != len(b) {
		return header{}, fmt.Errorf("%w: size %d in a %d-byte datagram", errBadDatagram, h.size, len(b))
	}
	return h, nil
}

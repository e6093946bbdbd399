package lease

import (
	"bytes"
	"encoding/json"
)

// decodeCanonicalAttrs decodes a lease value spelled exactly as
// LeaseAttrs.MarshalJSON and flannel write it,
//
//	{"PublicIP":<"addr"|null>,"PublicIPv6":<"addr"|null>[,"BackendType":"<type>"]
//	 [,"BackendData":{...}][,"BackendV6Data":{...}]}
//
// (no space between tokens, keys in this order, strings of printable ASCII
// without escapes), into j without the reflection-driven decoder: listing
// thousands of leases parses each of them. ok is false for any other
// spelling, which then goes to json.Unmarshal; where ok is true,
// json.Unmarshal would have filled j the same way.
func decodeCanonicalAttrs(data []byte, j *leaseAttrsJSON) (ok bool) {
	rest, ok := bytes.CutPrefix(data, []byte(`{"PublicIP":`))
	if !ok {
		return false
	}
	if j.PublicIP, rest, ok = plainStringOrNull(rest); !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"PublicIPv6":`)); !ok {
		return false
	}
	if j.PublicIPv6, rest, ok = plainStringOrNull(rest); !ok {
		return false
	}
	if r, found := bytes.CutPrefix(rest, []byte(`,"BackendType":`)); found {
		var t *string
		if t, rest, ok = plainStringOrNull(r); !ok || t == nil {
			return false
		}
		j.BackendType = *t
	}
	if r, found := bytes.CutPrefix(rest, []byte(`,"BackendData":`)); found {
		if j.BackendData, rest, ok = plainObject(r); !ok {
			return false
		}
	}
	if r, found := bytes.CutPrefix(rest, []byte(`,"BackendV6Data":`)); found {
		if j.BackendV6Data, rest, ok = plainObject(r); !ok {
			return false
		}
	}
	return string(rest) == "}"
}

// plainStringOrNull reads null, or a string of printable ASCII without
// escapes, at the start of b.
func plainStringOrNull(b []byte) (s *string, rest []byte, ok bool) {
	if r, found := bytes.CutPrefix(b, []byte("null")); found {
		return nil, r, true
	}
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			v := internedString(b[1:i])
			return &v, b[i+1:], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// internedString spares an allocation for the usual backend types.
func internedString(b []byte) string {
	switch string(b) {
	case "vxlan":
		return "vxlan"
	case "host-gw":
		return "host-gw"
	}
	return string(b)
}

// plainObject reads a valid JSON object of printable ASCII without
// escapes at the start of b, and returns a copy of it.
func plainObject(b []byte) (obj json.RawMessage, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '{' {
		return nil, nil, false
	}
	depth, inString := 0, false
	for i, c := range b {
		switch {
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, nil, false
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				if !json.Valid(b[:i+1]) {
					return nil, nil, false
				}
				return bytes.Clone(b[:i+1]), b[i+1:], true
			}
		}
	}
	return nil, nil, false
}

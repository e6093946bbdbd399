package wireguard

import (
	"encoding/json"
	"testing"
)

// FuzzParseBackendData checks that any peer's backend data is either
// refused or gives a usable peer that writes back to an equivalent value.
func FuzzParseBackendData(f *testing.F) {
	f.Add([]byte(`{"PublicKey":"` + testPub + `","Port":51820}`))
	f.Add([]byte(`{"PublicKey":"c2hvcnQ=","Port":0}`))
	f.Add([]byte(`{"publickey":"` + testPub + `","PORT":65535,"extra":[1,2]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseBackendData(data)
		if err != nil {
			return
		}
		if d.Port < 1 || d.Port > 65535 {
			t.Fatalf("accepted port %d", d.Port)
		}
		if d.PublicKey == [32]byte{} {
			t.Fatal("accepted an all-zero key")
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseBackendData(b)
		if err != nil || again != d {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", b, again, err, d)
		}
		if id, err := identity(data); err != nil || id != d.PublicKey.String() {
			t.Fatalf("identity(%s) = %q, %v", data, id, err)
		}
	})
}

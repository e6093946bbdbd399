package agent

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/netagent/netagent/lease"
)

// TestSameConfigEveryField changes each field of lease.Config in turn and
// checks that sameConfig tells the configs apart, so that a field added to
// Config cannot be left out of the comparison. A field of a kind this test
// does not know how to change fails it: extend the switch.
func TestSameConfigEveryField(t *testing.T) {
	base := lease.Config{
		EnableIPv4: true, Network: netip.MustParsePrefix("10.5.0.0/16"), SubnetLen: 24,
		SubnetMin: netip.MustParsePrefix("10.5.1.0/24"), SubnetMax: netip.MustParsePrefix("10.5.255.0/24"),
		BackendType: "vxlan", Backend: json.RawMessage(`{"Type":"vxlan"}`),
	}
	same := base
	same.Backend = append(json.RawMessage(nil), base.Backend...)
	if !sameConfig(&base, &same) {
		t.Fatal("sameConfig(c, copy of c) = false")
	}
	typ := reflect.TypeFor[lease.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		changed := base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch {
		case f.Type == reflect.TypeFor[netip.Prefix]():
			v.Set(reflect.ValueOf(netip.MustParsePrefix("192.0.2.0/28")))
		case f.Type == reflect.TypeFor[json.RawMessage]():
			v.Set(reflect.ValueOf(json.RawMessage(`{"Type":"vxlan","VNI":2}`)))
		case f.Type.Kind() == reflect.Bool:
			v.SetBool(!v.Bool())
		case f.Type.Kind() == reflect.Int:
			v.SetInt(v.Int() + 1)
		case f.Type.Kind() == reflect.String:
			v.SetString(v.String() + "-other")
		default:
			t.Fatalf("lease.Config.%s is of type %s, which this test cannot change: extend it", f.Name, f.Type)
		}
		if sameConfig(&base, &changed) || sameConfig(&changed, &base) {
			t.Errorf("sameConfig does not tell apart configs that differ in %s", f.Name)
		}
	}
}

package lease

import (
	"errors"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// cfgTestV4 returns the IPv4 part of an expected Config.
func cfgTestV4(network string, subnetLen int, lo, hi string) Config {
	return Config{
		EnableIPv4: true,
		Network:    netip.MustParsePrefix(network),
		SubnetLen:  subnetLen,
		SubnetMin:  netip.MustParsePrefix(lo),
		SubnetMax:  netip.MustParsePrefix(hi),
	}
}

// cfgTestWithV6 adds an IPv6 part to an expected Config.
func cfgTestWithV6(c Config, network string, subnetLen int, lo, hi string) Config {
	c.EnableIPv6 = true
	c.IPv6Network = netip.MustParsePrefix(network)
	c.IPv6SubnetLen = subnetLen
	c.IPv6SubnetMin = netip.MustParsePrefix(lo)
	c.IPv6SubnetMax = netip.MustParsePrefix(hi)
	return c
}

// cfgTestBackend sets the expected Backend of a Config.
func cfgTestBackend(c Config, typ, raw string) Config {
	c.BackendType = typ
	c.Backend = []byte(raw)
	return c
}

func cfgTestVXLAN(c Config) Config { return cfgTestBackend(c, "vxlan", `{"Type":"vxlan"}`) }

func TestParseConfigValid(t *testing.T) {
	v4Default := cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 24, "10.5.1.0/24", "10.5.255.0/24"))
	v6Only := cfgTestVXLAN(cfgTestWithV6(Config{}, "fc00::/48", 64, "fc00:0:0:1::/64", "fc00:0:0:ffff::/64"))
	withNFT := v4Default
	withNFT.EnableNFTables = true

	tests := []struct {
		name string
		json string
		want Config
	}{
		{"defaults for /16", `{"Network":"10.5.0.0/16"}`, v4Default},
		{"explicit defaults", `{"EnableIPv4":true,"EnableIPv6":false,"EnableNFTables":false,
			"Network":"10.5.0.0/16","SubnetLen":24,"SubnetMin":"10.5.1.0","SubnetMax":"10.5.255.0",
			"Backend":{"Type":"vxlan"}}`, v4Default},
		{"whitespace around the object", " \n\t{\"Network\" : \"10.5.0.0/16\"}\n ", v4Default},
		{"null fields count as absent", `{"Network":"10.5.0.0/16","SubnetLen":null,"SubnetMin":null,
			"SubnetMax":null,"EnableIPv4":null,"EnableIPv6":null,"Backend":null}`, v4Default},
		{"flannel's unset values count as absent", `{"Network":"10.5.0.0/16","SubnetLen":0,
			"SubnetMin":"0.0.0.0","SubnetMax":""}`, v4Default},
		{"/8 gives /24", `{"Network":"10.0.0.0/8"}`,
			cfgTestVXLAN(cfgTestV4("10.0.0.0/8", 24, "10.0.1.0/24", "10.255.255.0/24"))},
		{"/22 gives /24", `{"Network":"10.5.0.0/22"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/22", 24, "10.5.1.0/24", "10.5.3.0/24"))},
		{"/23 gives /25", `{"Network":"10.5.0.0/23"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/23", 25, "10.5.0.128/25", "10.5.1.128/25"))},
		{"/28 gives /30", `{"Network":"10.5.0.0/28"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/28", 30, "10.5.0.4/30", "10.5.0.12/30"))},
		{"explicit SubnetLen", `{"Network":"10.5.0.0/16","SubnetLen":20}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 20, "10.5.16.0/20", "10.5.240.0/20"))},
		{"SubnetLen net+2", `{"Network":"10.5.0.0/16","SubnetLen":18}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 18, "10.5.64.0/18", "10.5.192.0/18"))},
		{"SubnetLen 30", `{"Network":"10.5.0.0/16","SubnetLen":30}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 30, "10.5.0.4/30", "10.5.255.252/30"))},
		{"SubnetMin and SubnetMax as addresses", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 24, "10.5.10.0/24", "10.5.20.0/24"))},
		{"SubnetMin and SubnetMax as CIDRs", `{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMin":"10.5.10.64/26","SubnetMax":"10.5.20.192/26"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 26, "10.5.10.64/26", "10.5.20.192/26"))},
		{"SubnetMin equal to SubnetMax", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.7.0","SubnetMax":"10.5.7.0"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 24, "10.5.7.0/24", "10.5.7.0/24"))},
		{"SubnetMin may be the network's own subnet", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.0.0"}`,
			cfgTestVXLAN(cfgTestV4("10.5.0.0/16", 24, "10.5.0.0/24", "10.5.255.0/24"))},
		{"lowercase and uppercase keys", `{"network":"10.5.0.0/16","subnetlen":26,"enablenftables":true,
			"BACKEND":{"type":"host-gw"}}`,
			cfgTestBackend(Config{EnableIPv4: true, EnableNFTables: true,
				Network: netip.MustParsePrefix("10.5.0.0/16"), SubnetLen: 26,
				SubnetMin: netip.MustParsePrefix("10.5.0.64/26"), SubnetMax: netip.MustParsePrefix("10.5.255.192/26"),
			}, "host-gw", `{"type":"host-gw"}`)},
		{"EnableNFTables", `{"Network":"10.5.0.0/16","EnableNFTables":true}`, withNFT},
		{"backend host-gw", `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`,
			cfgTestBackend(v4Default, "host-gw", `{"Type":"host-gw"}`)},
		{"backend fields kept as written", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan", "VNI":4096,"Port":4789,"Extra":[1,2]}}`,
			cfgTestBackend(v4Default, "vxlan", `{"Type":"vxlan", "VNI":4096,"Port":4789,"Extra":[1,2]}`)},
		{"whitespace around the backend", "{\"Network\":\"10.5.0.0/16\",\"Backend\" : \n {\"Type\":\"host-gw\"} \n}",
			cfgTestBackend(v4Default, "host-gw", `{"Type":"host-gw"}`)},
		{"backend type not checked here", `{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}`,
			cfgTestBackend(v4Default, "udp", `{"Type":"udp"}`)},
		{"unknown fields ignored", `{"Network":"10.5.0.0/16","Networks":["10.6.0.0/16"],"BackendType":"udp","Foo":{"Bar":[1]}}`,
			v4Default},
		{"dual stack defaults", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`,
			cfgTestVXLAN(cfgTestWithV6(v4Default, "fc00::/48", 64, "fc00:0:0:1::/64", "fc00:0:0:ffff::/64"))},
		{"IPv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`, v6Only},
		{"IPv4 fields of a disabled family ignored", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48",
			"Network":"not a network","SubnetLen":99}`, v6Only},
		{"IPv6 /62 gives /64", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/62"}`,
			cfgTestVXLAN(cfgTestWithV6(Config{}, "fc00::/62", 64, "fc00:0:0:1::/64", "fc00:0:0:3::/64"))},
		{"IPv6 /63 gives /65", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/63"}`,
			cfgTestVXLAN(cfgTestWithV6(Config{}, "fc00::/63", 65, "fc00:0:0:0:8000::/65", "fc00:0:0:1:8000::/65"))},
		{"IPv6 /120 gives /122", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120"}`,
			cfgTestVXLAN(cfgTestWithV6(Config{}, "fc00::/120", 122, "fc00::40/122", "fc00::c0/122"))},
		{"IPv6 /124 gives /126", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/124"}`,
			cfgTestVXLAN(cfgTestWithV6(Config{}, "fc00::/124", 126, "fc00::4/126", "fc00::c/126"))},
		{"IPv6 explicit fields", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":80,
			"IPv6SubnetMin":"fc00:0:0:10::","IPv6SubnetMax":"fc00:0:0:20:ffff::/80"}`,
			cfgTestVXLAN(cfgTestWithV6(Config{}, "fc00::/48", 80, "fc00:0:0:10::/80", "fc00:0:0:20:ffff::/80"))},
		{"IPv6 unset values", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":0,
			"IPv6SubnetMin":"::","IPv6SubnetMax":null}`, v6Only},
		{"lowercase IPv6 keys", `{"enableipv4":false,"enableipv6":true,"ipv6network":"fc00::/48","ipv6subnetlen":64}`, v6Only},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("ParseConfig =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	const v6 = `"EnableIPv4":false,"EnableIPv6":true,`
	tests := []struct {
		name string
		json string
		// wantErr is a part of the message, naming the field and reason.
		wantErr string
	}{
		{"empty input", ``, "config is empty"},
		{"only whitespace", " \n ", "config is empty"},
		{"array", `["Network"]`, "config must be a JSON object, got an array"},
		{"string", `"10.5.0.0/16"`, "config must be a JSON object, got a string"},
		{"number", `16`, "config must be a JSON object, got a number"},
		{"null", `null`, "config must be a JSON object, got null"},
		{"syntax error", `{"Network":}`, "config is not valid JSON"},
		{"trailing comma", `{"Network":"10.5.0.0/16",}`, "config is not valid JSON"},
		{"unterminated", `{"Network":"10.5.0.0/16"`, "config is not valid JSON"},
		{"trailing garbage", `{"Network":"10.5.0.0/16"} x`, "config has data after its closing brace"},
		{"two objects", `{"Network":"10.5.0.0/16"}{}`, "config has data after its closing brace"},
		{"not UTF-8", "{\"Network\":\"10.5.0.0/16\",\"x\":\"\xff\"}", "config is not valid UTF-8"},
		{"missing Network", `{}`, "Network is required when EnableIPv4 is true"},
		{"empty Network", `{"Network":""}`, "Network is required when EnableIPv4 is true"},
		{"both families disabled", `{"EnableIPv4":false,"Network":"10.5.0.0/16"}`, "EnableIPv4 and EnableIPv6 are both false"},
		{"both families disabled explicitly", `{"EnableIPv4":false,"EnableIPv6":false}`, "EnableIPv4 and EnableIPv6 are both false"},
		{"field twice", `{"Network":"10.5.0.0/16","Network":"10.6.0.0/16"}`, `Network is given more than once (as "Network" and "Network")`},
		{"field twice in two cases", `{"Network":"10.5.0.0/16","network":"10.6.0.0/16"}`, `Network is given more than once (as "Network" and "network")`},
		{"EnableIPv4 as string", `{"EnableIPv4":"true","Network":"10.5.0.0/16"}`, `EnableIPv4 must be true or false, got string "true"`},
		{"EnableIPv6 as number", `{"EnableIPv6":1,"Network":"10.5.0.0/16"}`, "EnableIPv6 must be true or false, got 1"},
		{"EnableNFTables as string", `{"EnableNFTables":"yes","Network":"10.5.0.0/16"}`, "EnableNFTables must be true or false"},
		{"Network as number", `{"Network":10}`, "Network must be a string, got 10"},
		{"Network as object", `{"Network":{"IP":"10.5.0.0"}}`, "Network must be a string, got object"},
		{"Network without length", `{"Network":"10.5.0.0"}`, `Network "10.5.0.0" is not a CIDR`},
		{"Network garbage", `{"Network":"ten.five/16"}`, `Network "ten.five/16" is not a CIDR`},
		{"Network with leading zero length", `{"Network":"10.5.0.0/016"}`, `Network "10.5.0.0/016" is not a CIDR`},
		{"Network not a network address", `{"Network":"10.5.1.0/16"}`, "Network 10.5.1.0/16 is not a network address (did you mean 10.5.0.0/16?)"},
		{"Network IPv6", `{"Network":"fc00::/48"}`, "Network fc00::/48 is not an IPv4 CIDR"},
		{"Network IPv4-mapped", `{"Network":"::ffff:10.5.0.0/112"}`, "Network ::ffff:10.5.0.0/112 is not an IPv4 CIDR"},
		{"Network whole space", `{"Network":"0.0.0.0/0"}`, "Network 0.0.0.0/0 is the whole address space"},
		{"Network /29", `{"Network":"10.5.0.0/29"}`, "Network 10.5.0.0/29 is too small: the longest allowed prefix is /28"},
		{"Network /29 with SubnetLen", `{"Network":"10.5.0.0/29","SubnetLen":30}`, "Network 10.5.0.0/29 is too small"},
		{"Network /32", `{"Network":"10.5.0.1/32"}`, "Network 10.5.0.1/32 is too small"},
		{"SubnetLen as string", `{"Network":"10.5.0.0/16","SubnetLen":"24"}`, `SubnetLen must be an integer prefix length, got string "24"`},
		{"SubnetLen fractional", `{"Network":"10.5.0.0/16","SubnetLen":24.5}`, "SubnetLen must be an integer prefix length, got 24.5"},
		{"SubnetLen float", `{"Network":"10.5.0.0/16","SubnetLen":24.0}`, "SubnetLen must be an integer prefix length, got 24.0"},
		{"SubnetLen exponent", `{"Network":"10.5.0.0/16","SubnetLen":2.4e1}`, "SubnetLen must be an integer prefix length"},
		{"SubnetLen huge", `{"Network":"10.5.0.0/16","SubnetLen":99999999999999999999}`, "SubnetLen must be an integer prefix length"},
		{"SubnetLen 31", `{"Network":"10.5.0.0/16","SubnetLen":31}`, "SubnetLen 31 is longer than /30"},
		{"SubnetLen 31 on /28", `{"Network":"10.5.0.0/28","SubnetLen":31}`, "SubnetLen 31 is longer than /30"},
		{"SubnetLen 32", `{"Network":"10.5.0.0/16","SubnetLen":32}`, "SubnetLen 32 is longer than /30"},
		{"SubnetLen below net+2", `{"Network":"10.5.0.0/16","SubnetLen":17}`, "SubnetLen 17 is too short for Network 10.5.0.0/16: it must be at least /18"},
		{"SubnetLen equal to net", `{"Network":"10.5.0.0/16","SubnetLen":16}`, "SubnetLen 16 is too short"},
		{"SubnetLen negative", `{"Network":"10.5.0.0/16","SubnetLen":-1}`, "SubnetLen -1 is too short"},
		{"SubnetLen too short for /28", `{"Network":"10.5.0.0/28","SubnetLen":29}`, "SubnetLen 29 is too short for Network 10.5.0.0/28: it must be at least /30"},
		{"SubnetMin as number", `{"Network":"10.5.0.0/16","SubnetMin":167051520}`, "SubnetMin must be a string, got 167051520"},
		{"SubnetMin garbage", `{"Network":"10.5.0.0/16","SubnetMin":"low"}`, `SubnetMin "low" is neither an address nor a CIDR`},
		{"SubnetMin IPv6", `{"Network":"10.5.0.0/16","SubnetMin":"fc00::"}`, "SubnetMin fc00:: is not an IPv4 address"},
		{"SubnetMin misaligned", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.128"}`, "SubnetMin 10.5.1.128 is not aligned to SubnetLen 24 (10.5.1.0 would be)"},
		{"SubnetMin CIDR misaligned", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.128/24"}`, "SubnetMin 10.5.1.128 is not aligned to SubnetLen 24"},
		{"SubnetMin CIDR of another length", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0/25"}`, "SubnetMin 10.5.1.0/25 is not a /24: its length must be SubnetLen 24"},
		{"SubnetMin below Network", `{"Network":"10.5.0.0/16","SubnetMin":"10.4.255.0"}`, "SubnetMin 10.4.255.0 is outside Network 10.5.0.0/16"},
		{"SubnetMax outside", `{"Network":"10.5.0.0/16","SubnetMax":"10.6.0.0"}`, "SubnetMax 10.6.0.0 is outside Network 10.5.0.0/16"},
		{"SubnetMax misaligned", `{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMax":"10.5.255.32"}`, "SubnetMax 10.5.255.32 is not aligned to SubnetLen 26 (10.5.255.0 would be)"},
		{"SubnetMax misaligned with a default SubnetLen", `{"Network":"10.5.0.0/23","SubnetMax":"10.5.1.64"}`, "SubnetMax 10.5.1.64 is not aligned to SubnetLen 25 (10.5.1.0 would be)"},
		{"Min after Max", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.200.0","SubnetMax":"10.5.100.0"}`, "SubnetMin 10.5.200.0 is after SubnetMax 10.5.100.0"},
		{"Min after the default Max", `{"Network":"10.5.0.0/23","SubnetMax":"10.5.0.0"}`, "SubnetMin 10.5.0.128 is after SubnetMax 10.5.0.0"},
		{"Backend as string", `{"Network":"10.5.0.0/16","Backend":"vxlan"}`, `Backend must be an object such as {"Type":"vxlan"}, got string "vxlan"`},
		{"Backend as array", `{"Network":"10.5.0.0/16","Backend":[{"Type":"vxlan"}]}`, "Backend must be an object"},
		{"Backend as number", `{"Network":"10.5.0.0/16","Backend":1}`, "Backend must be an object"},
		{"Backend without Type", `{"Network":"10.5.0.0/16","Backend":{"VNI":1}}`, "Backend.Type is missing or empty"},
		{"Backend empty", `{"Network":"10.5.0.0/16","Backend":{}}`, "Backend.Type is missing or empty"},
		{"Backend empty Type", `{"Network":"10.5.0.0/16","Backend":{"Type":""}}`, "Backend.Type is missing or empty"},
		{"Backend Type number", `{"Network":"10.5.0.0/16","Backend":{"Type":1}}`, "Backend.Type must be a string, got 1"},
		{"Backend Type null", `{"Network":"10.5.0.0/16","Backend":{"Type":null}}`, "Backend.Type must be a string, got null"},
		{"Backend Type twice", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","type":"host-gw"}}`, `Backend.Type is given more than once (as "Type" and "type")`},
		{"Backend error after valid IPv4", `{"Network":"10.5.0.0/16","Backend":{"Type":["vxlan"]}}`, "Backend.Type must be a string, got array"},
		{"IPv4 field type checked when disabled", `{` + v6 + `"IPv6Network":"fc00::/48","SubnetLen":"24"}`, "SubnetLen must be an integer prefix length"},
		{"IPv6 without IPv6Network", `{"Network":"10.5.0.0/16","EnableIPv6":true}`, "IPv6Network is required when EnableIPv6 is true"},
		{"IPv6Network as number", `{` + v6 + `"IPv6Network":6}`, "IPv6Network must be a string, got 6"},
		{"IPv6Network IPv4", `{` + v6 + `"IPv6Network":"10.5.0.0/16"}`, "IPv6Network 10.5.0.0/16 is not an IPv6 CIDR"},
		{"IPv6Network IPv4-mapped", `{` + v6 + `"IPv6Network":"::ffff:10.5.0.0/112"}`, "IPv6Network ::ffff:10.5.0.0/112 is not an IPv6 CIDR"},
		{"IPv6Network not a network address", `{` + v6 + `"IPv6Network":"fc00::1/48"}`, "IPv6Network fc00::1/48 is not a network address (did you mean fc00::/48?)"},
		{"IPv6Network whole space", `{` + v6 + `"IPv6Network":"::/0"}`, "IPv6Network ::/0 is the whole address space"},
		{"IPv6Network /125", `{` + v6 + `"IPv6Network":"fc00::/125"}`, "IPv6Network fc00::/125 is too small: the longest allowed prefix is /124"},
		{"IPv6SubnetLen 127", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, "IPv6SubnetLen 127 is longer than /126"},
		{"IPv6SubnetLen below net+2", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetLen":49}`, "IPv6SubnetLen 49 is too short for IPv6Network fc00::/48: it must be at least /50"},
		{"IPv6SubnetLen as string", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetLen":"64"}`, "IPv6SubnetLen must be an integer prefix length"},
		{"IPv6SubnetMin outside", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc01::"}`, "IPv6SubnetMin fc01:: is outside IPv6Network fc00::/48"},
		{"IPv6SubnetMin IPv4", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetMin":"10.5.1.0"}`, "IPv6SubnetMin 10.5.1.0 is not an IPv6 address"},
		{"IPv6SubnetMin with zone", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::%eth0"}`, "IPv6SubnetMin fc00:0:0:1::%eth0 is not an IPv6 address"},
		{"Network loopback", `{"Network":"127.0.0.0/8"}`, "Network 127.0.0.0/8 overlaps 127.0.0.0/8, loopback: an overlay there would take over addresses the host needs for itself"},
		{"Network inside loopback", `{"Network":"127.5.0.0/16"}`, "Network 127.5.0.0/16 overlaps 127.0.0.0/8, loopback"},
		{"Network multicast", `{"Network":"224.0.0.0/4"}`, "Network 224.0.0.0/4 overlaps 224.0.0.0/4, multicast"},
		{"Network inside multicast", `{"Network":"239.1.0.0/16"}`, "Network 239.1.0.0/16 overlaps 224.0.0.0/4, multicast"},
		{"Network link-local", `{"Network":"169.254.0.0/16"}`, "Network 169.254.0.0/16 overlaps 169.254.0.0/16, link-local"},
		{"Network this-network", `{"Network":"0.0.0.0/8"}`, `Network 0.0.0.0/8 overlaps 0.0.0.0/8, "this network"`},
		{"Network reserved", `{"Network":"240.0.0.0/8"}`, "Network 240.0.0.0/8 overlaps 240.0.0.0/4, reserved"},
		{"Network around loopback", `{"Network":"64.0.0.0/2"}`, "Network 64.0.0.0/2 overlaps 127.0.0.0/8, loopback"},
		{"Network around multicast", `{"Network":"192.0.0.0/2"}`, "Network 192.0.0.0/2 overlaps 224.0.0.0/4, multicast"},
		{"IPv6Network link-local", `{` + v6 + `"IPv6Network":"fe80::/48"}`, "IPv6Network fe80::/48 overlaps fe80::/10, link-local"},
		{"IPv6Network multicast", `{` + v6 + `"IPv6Network":"ff05::/16"}`, "IPv6Network ff05::/16 overlaps ff00::/8, multicast"},
		{"IPv6Network around loopback", `{` + v6 + `"IPv6Network":"::/8"}`, "IPv6Network ::/8 overlaps ::/128, the unspecified address"},
		{"IPv6Network around link-local", `{` + v6 + `"IPv6Network":"8000::/1"}`, "IPv6Network 8000::/1 overlaps fe80::/10, link-local"},
		{"IPv6 special in a dual-stack config", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"ff00::/64"}`, "IPv6Network ff00::/64 overlaps ff00::/8, multicast"},
		{"IPv6SubnetMax misaligned", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:2::1"}`, "IPv6SubnetMax fc00:0:0:2::1 is not aligned to IPv6SubnetLen 64 (fc00:0:0:2:: would be)"},
		{"IPv6SubnetMax CIDR of another length", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:2::/56"}`, "IPv6SubnetMax fc00:0:0:2::/56 is not a /64"},
		{"IPv6 Min after Max", `{` + v6 + `"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:9::","IPv6SubnetMax":"fc00:0:0:8::"}`, "IPv6SubnetMin fc00:0:0:9:: is after IPv6SubnetMax fc00:0:0:8::"},
		{"IPv6 error in a dual-stack config", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/125"}`, "IPv6Network fc00::/125 is too small"},
	}
	const prefix = "subnet: invalid network config: "
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatalf("ParseConfig = %+v, want an error containing %q", got, tt.wantErr)
			}
			if got != nil {
				t.Errorf("ParseConfig returned %+v with error %v, want nil", got, err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, prefix) || strings.Count(msg, prefix) != 1 {
				t.Errorf("error %q does not start with %q exactly once", msg, prefix)
			}
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestParseConfigExactMessage(t *testing.T) {
	_, err := ParseConfig([]byte(`{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}`))
	const want = "subnet: invalid network config: SubnetMin 10.6.0.0 is outside Network 10.5.0.0/16"
	if err == nil || err.Error() != want {
		t.Fatalf("ParseConfig error = %v, want %q", err, want)
	}
}

func TestParseConfigBackendNotAliased(t *testing.T) {
	data := []byte(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":7}}`)
	c, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = ' '
	}
	if got, want := string(c.Backend), `{"Type":"vxlan","VNI":7}`; got != want {
		t.Errorf("Backend after the input was overwritten = %q, want %q", got, want)
	}
}

func TestUnknownConfigFields(t *testing.T) {
	tests := []struct {
		json string
		want []string
	}{
		{`{"Network":"10.5.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","Unknown":1}}`, nil},
		{`{"network":"10.5.0.0/16","SUBNETMIN":"10.5.1.0","ipv6subnetmax":"","enablenftables":true}`, nil},
		{`{"Network":"10.5.0.0/16","SubnetMn":"10.5.1.0","Foo":1,"Networks":[],"Foo":2,"BackendType":"udp"}`,
			[]string{"SubnetMn", "Foo", "Networks", "BackendType"}},
		{`{"Foo":1} trailing`, nil},
		{`["Foo"]`, nil},
		{``, nil},
	}
	for _, tt := range tests {
		if got := UnknownConfigFields([]byte(tt.json)); !slices.Equal(got, tt.want) {
			t.Errorf("UnknownConfigFields(%s) = %q, want %q", tt.json, got, tt.want)
		}
	}
}

func cfgTestParse(t *testing.T, s string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(s))
	if err != nil {
		t.Fatalf("ParseConfig(%s): %v", s, err)
	}
	return c
}

func TestConfigFits(t *testing.T) {
	v4 := cfgTestParse(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}`)
	dual := cfgTestParse(t, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48",
		"IPv6SubnetMin":"fc00:0:0:10::","IPv6SubnetMax":"fc00:0:0:20::"}`)
	v6 := cfgTestParse(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`)

	p := func(s string) netip.Prefix {
		if s == "" {
			return netip.Prefix{}
		}
		return netip.MustParsePrefix(s)
	}
	tests := []struct {
		name   string
		c      *Config
		v4, v6 string
		want   bool
	}{
		{"v4 at SubnetMin", v4, "10.5.10.0/24", "", true},
		{"v4 inside", v4, "10.5.15.0/24", "", true},
		{"v4 at SubnetMax", v4, "10.5.20.0/24", "", true},
		{"v4 below SubnetMin", v4, "10.5.9.0/24", "", false},
		{"v4 above SubnetMax", v4, "10.5.21.0/24", "", false},
		{"v4 outside Network", v4, "10.6.15.0/24", "", false},
		{"v4 wrong length", v4, "10.5.15.0/25", "", false},
		{"v4 wider subnet", v4, "10.5.0.0/20", "", false},
		{"v4 not a network address", v4, "10.5.15.1/24", "", false},
		{"v4 missing", v4, "", "", false},
		{"v4 config, dual-stack lease", v4, "10.5.15.0/24", "fc00:0:0:15::/64", false},
		{"v4 config, v6 lease", v4, "", "fc00:0:0:15::/64", false},
		{"v4 config, IPv4-mapped subnet", v4, "::ffff:10.5.15.0/120", "", false},
		{"dual, both inside", dual, "10.5.15.0/24", "fc00:0:0:15::/64", true},
		{"dual, both at bounds", dual, "10.5.255.0/24", "fc00:0:0:10::/64", true},
		{"dual, v6 missing", dual, "10.5.15.0/24", "", false},
		{"dual, v4 missing", dual, "", "fc00:0:0:15::/64", false},
		{"dual, v6 above max", dual, "10.5.15.0/24", "fc00:0:0:21::/64", false},
		{"dual, v6 wrong length", dual, "10.5.15.0/24", "fc00:0:0:15::/80", false},
		{"dual, v6 given as v4", dual, "10.5.15.0/24", "10.5.16.0/24", false},
		{"v6 only", v6, "", "fc00:0:0:15::/64", true},
		{"v6 only, network's own subnet", v6, "", "fc00::/64", false},
		{"v6 only, dual-stack lease", v6, "10.5.15.0/24", "fc00:0:0:15::/64", false},
		{"v6 only, IPv4-mapped subnet", v6, "", "::ffff:10.5.15.0/120", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Fits(p(tt.v4), p(tt.v6)); got != tt.want {
				t.Errorf("Fits(%q, %q) = %v, want %v", tt.v4, tt.v6, got, tt.want)
			}
		})
	}
}

func TestConfigPoolSize(t *testing.T) {
	tests := []struct {
		json   string
		v4, v6 uint64
	}{
		{`{"Network":"10.5.0.0/16"}`, 255, 0},
		{`{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}`, 11, 0},
		{`{"Network":"10.5.0.0/16","SubnetMin":"10.5.7.0","SubnetMax":"10.5.7.0"}`, 1, 0},
		{`{"Network":"10.5.0.0/28"}`, 3, 0},
		{`{"Network":"10.0.0.0/8","SubnetLen":30,"SubnetMin":"10.0.0.0"}`, 1 << 22, 0},
		{`{"Network":"32.0.0.0/3","SubnetLen":30,"SubnetMin":"32.0.0.0"}`, 1 << 27, 0},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`, 0, 65535},
		{`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/120"}`, 255, 3},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/8"}`, 0, 1<<56 - 1},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/60","IPv6SubnetLen":124,"IPv6SubnetMin":"fc00::"}`, 0, math.MaxUint64},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/61","IPv6SubnetLen":124,"IPv6SubnetMin":"fc00::"}`, 0, 1 << 63},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/60","IPv6SubnetLen":124}`, 0, math.MaxUint64},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/7","IPv6SubnetLen":126}`, 0, math.MaxUint64},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"4000::/2","IPv6SubnetLen":66,"IPv6SubnetMin":"4000::"}`, 0, math.MaxUint64},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"4000::/2","IPv6SubnetLen":65,"IPv6SubnetMin":"4000::"}`, 0, 1 << 63},
	}
	for _, tt := range tests {
		c := cfgTestParse(t, tt.json)
		if got := c.PoolSize(); got != tt.v4 {
			t.Errorf("%s: PoolSize = %d, want %d", tt.json, got, tt.v4)
		}
		if got := c.IPv6PoolSize(); got != tt.v6 {
			t.Errorf("%s: IPv6PoolSize = %d, want %d", tt.json, got, tt.v6)
		}
	}
}

func TestConfigString(t *testing.T) {
	tests := []struct {
		json, want string
	}{
		{`{"Network":"10.5.0.0/16"}`, "network=10.5.0.0/16 subnetlen=24 backend=vxlan"},
		{`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}`,
			"network=10.5.0.0/16 subnetlen=24 ipv6network=fc00::/48 ipv6subnetlen=64 backend=host-gw"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120"}`,
			"ipv6network=fc00::/120 ipv6subnetlen=122 backend=vxlan"},
	}
	for _, tt := range tests {
		if got := cfgTestParse(t, tt.json).String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	var nilConfig *Config
	if got := nilConfig.String(); got != "<nil>" {
		t.Errorf("nil String() = %q", got)
	}
}

package config

import (
	"fmt"
	"sort"
	"strings"
)

// Route is one [outbound.routes] entry: a static next hop for a domain,
// written as "host:port" or as an inline table
// { addr = "host:port", tls = "verify" }. TLS "" takes [outbound] tls.
type Route struct {
	Addr string `toml:"addr"`
	TLS  string `toml:"tls"`
}

// UnmarshalTOML reads either form. Unknown keys of the table form are an
// error, as everywhere in hisp.toml.
func (r *Route) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*r = Route{Addr: v}
		return nil
	case map[string]any:
		var out Route
		var unknown []string
		for k, x := range v {
			s, ok := x.(string)
			switch {
			case k == "addr" && ok:
				out.Addr = s
			case k == "tls" && ok:
				out.TLS = s
			case k == "addr" || k == "tls":
				return fmt.Errorf("route %s: want a string", k)
			default:
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("route: unknown keys: %s", strings.Join(unknown, ", "))
		}
		*r = out
		return nil
	}
	return fmt.Errorf("route: want \"host:port\" or { addr = \"host:port\", tls = \"verify\" }")
}

// tlsPolicies are the values of [outbound] tls and a route's tls.
var tlsPolicies = map[string]bool{"opportunistic": true, "required": true, "verify": true}

// Routes makes static routes of the plain "host:port" form, as tests and
// `hisp sandbox` configure them.
func Routes(m map[string]string) map[string]Route {
	out := make(map[string]Route, len(m))
	for d, a := range m {
		out[d] = Route{Addr: a}
	}
	return out
}

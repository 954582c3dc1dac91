package webhooks_test

import (
	"context"
	"net/netip"
	"net/url"
	"testing"

	"github.com/waqueue/waqueue/adapters/webhooks"
)

// FuzzCheckURL: the registration check never panics, and whatever it accepts under the
// production policy is an http(s) URL whose host is a public literal address or a name that the
// resolver maps to public addresses only.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1/", "https://[::ffff:10.0.0.1]:8443/x", "http://2130706433/", "http://0x7f.1/",
		"http://public.example/", "http://localhost/", "http://[fe80::1%25eth0]/", "ftp://x", "http://user@public.example/",
		"http://93.184.215.14/a?b=c#d", "http://[::]/", "http://169.254.169.254./", "http:/relative", "%"} {
		f.Add(s)
	}
	eg := webhooks.NewEgress(webhooks.EgressConfig{Resolver: testResolver()})
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := eg.CheckURL(context.Background(), raw)
		if err != nil {
			if u != nil {
				t.Fatalf("%q refused (%v) but a URL returned", raw, err)
			}
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("%q accepted with scheme %q", raw, u.Scheme)
		}
		again, err := url.Parse(u.String())
		if err != nil {
			t.Fatalf("%q accepted but its normal form %q does not parse: %v", raw, u.String(), err)
		}
		if again.Hostname() != u.Hostname() {
			t.Fatalf("%q accepted but its normal form %q parses to host %q", raw, u.String(), again.Hostname())
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			if c := webhooks.Class(a); c != "" {
				t.Fatalf("%q accepted with a %s address", raw, c)
			}
			return
		}
		addrs, err := testResolver().LookupNetIP(context.Background(), "ip", u.Hostname())
		if err != nil {
			t.Fatalf("%q accepted with an unresolvable host %q", raw, u.Hostname())
		}
		for _, a := range addrs {
			if c := webhooks.Class(a); c != "" {
				t.Fatalf("%q accepted although %s resolves to a %s address", raw, u.Hostname(), c)
			}
		}
	})
}

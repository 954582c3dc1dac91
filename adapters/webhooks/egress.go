package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrEgressRefused: a webhook URL names, or resolves to, an address the egress policy refuses
// (*EgressError says which class).
var ErrEgressRefused = errors.New("webhooks: address refused by the egress policy")

// Address classes an egress policy refuses unless the operator allows them.
const (
	ClassLoopback    = "loopback"     // 127/8, ::1
	ClassPrivate     = "private"      // RFC 1918 10/8, 172.16/12, 192.168/16; ULA fc00::/7
	ClassLinkLocal   = "link-local"   // 169.254/16, fe80::/10
	ClassMetadata    = "metadata"     // cloud metadata: 169.254.169.254, fd00:ec2::254
	ClassUnspecified = "unspecified"  // 0.0.0.0, ::
	ClassMulticast   = "multicast"    // 224/4, ff00::/8
	ClassCGNAT       = "cgnat"        // shared address space 100.64/10 (RFC 6598)
	ClassReserved    = "reserved"     // other special-purpose ranges (documentation, benchmarking, 240/4, 6to4, NAT64, …)
	ClassAmbiguous   = "ambiguous-ip" // a host that is neither a canonical IP nor a DNS name ("2130706433", "0177.1")
)

// errUnresolved: a webhook host did not resolve.
var errUnresolved = errors.New("webhooks: host does not resolve")

// EgressError is a refused webhook address.
type EgressError struct {
	// Host is the URL's host; Addr the refused address (invalid for ClassAmbiguous).
	Host  string
	Addr  netip.Addr
	Class string
}

func (e *EgressError) Error() string {
	if !e.Addr.IsValid() || e.Host == e.Addr.String() {
		return fmt.Sprintf("webhooks: host %q is refused: %s address", e.Host, e.Class)
	}
	return fmt.Sprintf("webhooks: host %q resolves to %s, a %s address", e.Host, e.Addr, e.Class)
}

// Is makes errors.Is(err, ErrEgressRefused) true.
func (e *EgressError) Is(target error) bool { return target == ErrEgressRefused }

// Resolver resolves host names; *net.Resolver implements it. Tests give a fixed table.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// EgressConfig is the operator's webhook egress policy. The zero value reaches public
// addresses only.
type EgressConfig struct {
	// AllowPrivate lets webhooks reach every address class (loopback, private, link-local,
	// metadata, …): for tests and on-premises receivers on a trusted network
	// (--webhook-allow-private). Prefer AllowCIDRs.
	AllowPrivate bool
	// AllowCIDRs are networks webhooks may reach although their class is refused, for
	// example an on-premises receiver's subnet (--webhook-allow-cidrs).
	AllowCIDRs []netip.Prefix
	// Resolver resolves host names at registration and at delivery. Default
	// net.DefaultResolver.
	Resolver Resolver
}

// Egress enforces an EgressConfig: at registration (CheckURL) and at delivery, in the dialer
// (after DNS resolution, and again on the address actually connected to), so that a name that
// resolved to a public address at registration and to an internal one later (DNS rebinding) is
// refused. Safe for concurrent use.
type Egress struct {
	cfg EgressConfig
}

// NewEgress returns the policy of cfg.
func NewEgress(cfg EgressConfig) *Egress {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	return &Egress{cfg: cfg}
}

var (
	metadataAddrs = []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254")}
	cgnat         = netip.MustParsePrefix("100.64.0.0/10")
	reserved      = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // documentation
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
		netip.MustParsePrefix("198.51.100.0/24"), // documentation
		netip.MustParsePrefix("203.0.113.0/24"),  // documentation
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
		netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
		netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may embed an internal IPv4 address
		netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
		netip.MustParsePrefix("100::/64"),        // discard-only
		netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo, …)
		netip.MustParsePrefix("2001:db8::/32"),   // documentation
		netip.MustParsePrefix("2002::/16"),       // 6to4: embeds an IPv4 address
		netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	}
)

// Class returns the refused class of a, or "" when a is a public unicast address. IPv4-mapped
// IPv6 addresses (::ffff:127.0.0.1) are classified as their IPv4 address.
func Class(a netip.Addr) string {
	if a.Zone() != "" {
		// A zone scopes an address to one of this host's interfaces, so it is never a public
		// destination; and netip's predicates and prefixes do not see through it ("::%x" is
		// not unspecified, no prefix contains a zoned address): classify the bare address.
		if c := Class(a.WithZone("")); c != "" {
			return c
		}
		return ClassReserved
	}
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return ClassReserved
	case a.IsUnspecified():
		return ClassUnspecified
	case a.IsLoopback():
		return ClassLoopback
	case a.WithZone("") == metadataAddrs[0] || a.WithZone("") == metadataAddrs[1]:
		return ClassMetadata
	case a.IsLinkLocalUnicast():
		return ClassLinkLocal
	case a.IsMulticast():
		return ClassMulticast
	case a.IsPrivate():
		return ClassPrivate
	case cgnat.Contains(a):
		return ClassCGNAT
	}
	for _, p := range reserved {
		if p.Contains(a) {
			return ClassReserved
		}
	}
	if !a.IsGlobalUnicast() {
		return ClassReserved
	}
	return ""
}

// CheckAddr returns nil if webhooks may reach a, and an *EgressError otherwise.
func (e *Egress) CheckAddr(host string, a netip.Addr) error {
	class := Class(a)
	if class == "" || e.cfg.AllowPrivate {
		return nil
	}
	for _, p := range e.cfg.AllowCIDRs {
		if p.Contains(a.Unmap()) {
			return nil
		}
	}
	return &EgressError{Host: host, Addr: a, Class: class}
}

// CheckURL parses raw, requires an absolute http(s) URL, and checks its host: a literal address
// by its class, a name by every address it resolves to now (any refused address refuses the
// URL). A host that is not a canonical IP but whose last label is numeric ("2130706433",
// "0177.0.0.1", "0x7f.1", "127.1" — forms some resolvers read as IPv4) is refused as ambiguous.
// Errors: *InvalidError (not http(s)), *EgressError (refused address), or the resolver's error
// wrapped ("does not resolve").
func (e *Egress) CheckURL(ctx context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, &InvalidError{Field: "url", Value: raw, Reason: "must be an absolute http or https URL"}
	}
	if u.User != nil {
		return nil, &InvalidError{Field: "url", Value: raw, Reason: "must not carry credentials"}
	}
	// What is stored and later dialled is the URL's normal form: it must parse to the same host.
	if again, err := url.Parse(u.String()); err != nil || again.Hostname() != u.Hostname() {
		return nil, &InvalidError{Field: "url", Value: raw, Reason: "must be an absolute http or https URL"}
	}
	if _, err := e.resolve(ctx, u.Hostname()); err != nil {
		return nil, err
	}
	return u, nil
}

// resolve returns the addresses of host that the policy allows, or an error naming the first
// refused one.
func (e *Egress) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if err := e.CheckAddr(host, a); err != nil {
			return nil, err
		}
		return []netip.Addr{a}, nil
	}
	if numericLastLabel(host) {
		return nil, &EgressError{Host: host, Class: ClassAmbiguous}
	}
	addrs, err := e.cfg.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", errUnresolved, host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %q", errUnresolved, host)
	}
	for _, a := range addrs {
		if err := e.CheckAddr(host, a); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// numericLastLabel reports whether host's last DNS label is a number (decimal, octal or hex):
// no public DNS name ends so, and C resolvers read such hosts as IPv4 addresses.
func numericLastLabel(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(last, "0x"), "0X")
	if digits == "" {
		return true
	}
	hex := digits != last
	for _, c := range digits {
		switch {
		case c >= '0' && c <= '9':
		case hex && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'):
		default:
			return false
		}
	}
	return true
}

// DialContext dials address (host:port) for a delivery: it resolves the host with the policy's
// resolver, refuses the connection if any address is refused, and dials the allowed addresses
// in order with a dialer that checks, before connecting, the very address it connects to.
func (e *Egress) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	addrs, err := e.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, hostport string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(hostport)
		if err != nil {
			return fmt.Errorf("webhooks: dial %q: %w", hostport, err)
		}
		return e.CheckAddr(host, ap.Addr())
	}}
	var errs []error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// Client returns an HTTP client for deliveries: every connection through DialContext, no
// proxy from the environment (a proxy would make the policy check the proxy's address, not the
// receiver's), no redirects followed (a 3xx answer is returned as it is, and the delivery
// fails), and timeout bounding each request.
func (e *Egress) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           e.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: timeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

package sender

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// parseSOCKS reads MW_SOCKS_PROXIES, "ip=host:port" pairs, into the proxy
// address smtpclient dials through for each source IP; with a user name
// the address becomes a socks5:// URL carrying the credentials (RFC 1929).
// Credentials never come inline, so the variable can be logged as is.
func parseSOCKS(pairs []string, user, password string) (map[netip.Addr]string, error) {
	out := map[netip.Addr]string{}
	for _, p := range pairs {
		ipText, proxy, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return nil, fmt.Errorf("%q: want source-ip=host:port", p)
		}
		ip, err := netip.ParseAddr(ipText)
		if err != nil {
			return nil, fmt.Errorf("%q: source IP: %v", p, err)
		}
		if strings.Contains(proxy, "@") || strings.Contains(proxy, "://") {
			return nil, fmt.Errorf("%q: give host:port only; credentials go in MW_SOCKS_USERNAME and MW_SOCKS_PASSWORD", ipText)
		}
		if h, port, err := net.SplitHostPort(proxy); err != nil || h == "" || port == "" {
			return nil, fmt.Errorf("%q: proxy %q: want host:port", ipText, proxy)
		}
		if _, dup := out[ip]; dup {
			return nil, fmt.Errorf("%s has two proxies", ip)
		}
		if user != "" {
			u := url.URL{Scheme: "socks5", Host: proxy, User: url.UserPassword(user, password)}
			if password == "" {
				u.User = url.User(user)
			}
			proxy = u.String()
		}
		out[ip] = proxy
	}
	return out, nil
}

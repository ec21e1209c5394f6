package mx

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Provider names a mailbox provider by the MX hosts it runs. Domains whose
// mail goes to the same provider share one sending budget, whatever their
// own name: gmail.com and every Google Workspace domain are "google".
type Provider struct {
	// Name is the provider key: lower case letters, digits and '-'.
	Name string
	// Patterns match MX host names (lower case, no trailing dot):
	// "*.google.com" matches any name ending in ".google.com";
	// a pattern without "*." matches that name only.
	Patterns []string
}

// DefaultProviders is the table used unless WithProviders replaces it.
// Sources: the MX records the providers publish for their own and their
// hosted domains.
func DefaultProviders() []Provider {
	return []Provider{
		{Name: "google", Patterns: []string{"*.google.com", "*.googlemail.com", "*.smtp.goog"}},
		{Name: "yahoo", Patterns: []string{"*.yahoodns.net"}}, // Yahoo, AOL, Verizon
		{Name: "microsoft", Patterns: []string{"*.protection.outlook.com", "*.olc.protection.outlook.com"}},
		{Name: "apple", Patterns: []string{"*.mail.icloud.com"}},
		{Name: "yandex", Patterns: []string{"*.yandex.net", "*.yandex.ru"}},
		{Name: "mailru", Patterns: []string{"*.mail.ru"}},
		{Name: "gmx", Patterns: []string{"*.gmx.net", "*.gmx.com", "*.web.de"}}, // GMX and WEB.DE
		{Name: "zoho", Patterns: []string{"*.zoho.com", "*.zoho.eu", "*.zoho.in", "*.zohomail.com"}},
		{Name: "proton", Patterns: []string{"*.protonmail.ch"}},
		{Name: "fastmail", Patterns: []string{"*.messagingengine.com"}},
		{Name: "tonline", Patterns: []string{"*.t-online.de"}},
		{Name: "orange", Patterns: []string{"*.orange.fr"}},
		{Name: "qq", Patterns: []string{"*.qq.com"}},
	}
}

// matcher is a compiled provider table: exact names in a map, suffixes
// checked by walking up the labels of a host name.
type matcher struct {
	exact  map[string]string
	suffix map[string]string // ".google.com" → "google"
}

func compile(table []Provider) (*matcher, error) {
	m := &matcher{exact: map[string]string{}, suffix: map[string]string{}}
	for _, p := range table {
		if p.Name == "" || !isToken(p.Name) {
			return nil, invalidOption("provider name %q: use [a-z0-9-]", p.Name)
		}
		for _, pat := range p.Patterns {
			pat = strings.ToLower(strings.TrimSuffix(pat, "."))
			suffix, wild := strings.CutPrefix(pat, "*.")
			if suffix == "" || strings.Contains(suffix, "*") {
				return nil, invalidOption("provider %s pattern %q", p.Name, pat)
			}
			// The first table entry wins, so WithExtraProviders can
			// override the defaults.
			if wild {
				if _, dup := m.suffix["."+suffix]; !dup {
					m.suffix["."+suffix] = p.Name
				}
			} else if _, dup := m.exact[suffix]; !dup {
				m.exact[suffix] = p.Name
			}
		}
	}
	return m, nil
}

// match returns the provider of host, or "". The most specific suffix
// wins: a host under ".olc.protection.outlook.com" matches that pattern
// before ".protection.outlook.com".
func (m *matcher) match(host string) string {
	if p, ok := m.exact[host]; ok {
		return p
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			if p, ok := m.suffix[host[i:]]; ok {
				return p
			}
		}
	}
	return ""
}

// Token returns a form of a site or provider key that is safe as a NATS
// subject token or a Redis key part: the key itself when it is short and
// made of [a-z0-9-], else "s" followed by 20 hex digits of its SHA-256.
// Equal keys give equal tokens.
func Token(key string) string {
	if len(key) <= 40 && isToken(key) {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "s" + hex.EncodeToString(sum[:10])
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

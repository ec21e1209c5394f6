package dkim

import (
	"bytes"
	"crypto"
	"fmt"
	"slices"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// DefaultHeaders are the header fields signed when present, in h= order:
// RFC 6376 §5.4.1's recommendations, then the fields bulk mail adds.
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"In-Reply-To", "References",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"List-Unsubscribe-Post", // RFC 8058 §4
	"Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Feedback-ID",
}

// DefaultOversign are the fields signed once more than they occur.
var DefaultOversign = []string{"From"}

// Signer signs messages with the keys it holds. Configure it before first
// use; it is then safe for concurrent use.
type Signer struct {
	// Headers lists the header fields to sign when present; nil means
	// DefaultHeaders. From is always signed.
	Headers []string
	// Oversign lists fields of Headers signed once more than they occur;
	// nil means DefaultOversign, empty means none.
	Oversign []string

	keys map[string][]*Key // domain → keys, by selector
}

// NewSigner returns a Signer holding keys. Two keys for one domain and
// selector are an error wrapping ErrDuplicateKey.
func NewSigner(keys ...*Key) (*Signer, error) {
	s := &Signer{keys: map[string][]*Key{}}
	for _, k := range keys {
		for _, o := range s.keys[k.domain] {
			if o.selector == k.selector {
				return nil, fmt.Errorf("%w: %s", ErrDuplicateKey, k.RecordName())
			}
		}
		s.keys[k.domain] = append(s.keys[k.domain], k)
	}
	for _, ks := range s.keys {
		slices.SortFunc(ks, func(a, b *Key) int { return strings.Compare(a.selector, b.selector) })
	}
	return s, nil
}

// Keys returns the keys of domain by selector, or every key (by domain,
// then selector) when domain is empty: for publishing and checking their
// records.
func (s *Signer) Keys(domain string) []*Key {
	if domain != "" {
		return slices.Clone(s.keys[normDomain(domain)])
	}
	var out []*Key
	for _, d := range sortedDomains(s.keys) {
		out = append(out, s.keys[d]...)
	}
	return out
}

// String describes the signer without secrets: its keys' names.
func (s *Signer) String() string {
	ks := s.Keys("")
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.String()
	}
	return "dkim signer [" + strings.Join(names, ", ") + "]"
}

// GoString is String.
func (s *Signer) GoString() string { return s.String() }

// Sign signs msg for domain with the keys of selectors (every key of the
// domain when selectors is empty) and returns the message with one
// DKIM-Signature field per key prepended, in the order of selectors. The
// message is read once per key and copied once, into the result. The new
// fields end lines as the message's first line does (CRLF, or LF for a
// message kept with bare LFs). Errors wrap ErrNoKey or ErrMessage.
func (s *Signer) Sign(domain string, selectors []string, msg []byte) ([]byte, error) {
	keys, err := s.pick(domain, selectors)
	if err != nil {
		return nil, err
	}
	return s.SignWith(keys, msg)
}

// Select returns the keys Sign would use for domain and selectors: every
// key of the domain by selector when selectors is empty, else the keys of
// those selectors in their order. Errors wrap ErrNoKey. A caller can ask
// before doing work the signature depends on, and sign with SignWith.
func (s *Signer) Select(domain string, selectors []string) ([]*Key, error) {
	return s.pick(domain, selectors)
}

// SignWith signs msg with keys, as Sign does once it has chosen them.
// Errors wrap ErrMessage.
func (s *Signer) SignWith(keys []*Key, msg []byte) ([]byte, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key to sign with", ErrNoKey)
	}
	hk, lf, err := s.headerKeys(msg)
	if err != nil {
		return nil, err
	}
	sigs := make([]string, len(keys))
	size := len(msg)
	for i, k := range keys {
		sig, err := sign(k, hk, msg)
		if err != nil {
			return nil, err
		}
		if lf {
			sig = strings.ReplaceAll(sig, "\r\n", "\n")
		}
		sigs[i] = sig
		size += len(sig)
	}
	out := make([]byte, 0, size)
	for _, sig := range sigs {
		out = append(out, sig...)
	}
	return append(out, msg...), nil
}

func sign(k *Key, headerKeys []string, msg []byte) (string, error) {
	sg, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain:                 k.domain,
		Selector:               k.selector,
		Signer:                 k.signer,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             headerKeys,
	})
	if err != nil {
		return "", fmt.Errorf("dkim: %s: %w", k, err)
	}
	_, werr := sg.Write(msg)
	// Close reports the signing goroutine's error, which is also why a
	// write failed.
	if err := sg.Close(); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMessage, k, err)
	}
	if werr != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMessage, k, werr)
	}
	return sg.Signature(), nil
}

func (s *Signer) pick(domain string, selectors []string) ([]*Key, error) {
	all := s.keys[normDomain(domain)]
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: for domain %q", ErrNoKey, domain)
	}
	if len(selectors) == 0 {
		return all, nil
	}
	keys := make([]*Key, 0, len(selectors))
	for _, sel := range selectors {
		i := slices.IndexFunc(all, func(k *Key) bool { return k.selector == sel })
		if i < 0 {
			return nil, fmt.Errorf("%w: selector %q of domain %q", ErrNoKey, sel, domain)
		}
		keys = append(keys, all[i])
	}
	return keys, nil
}

// headerKeys scans the message header (RFC 5322 §2.2) and returns the h=
// list: each field of the sign list as often as it occurs, oversigned
// fields once more. It also reports whether lines end in a bare LF.
func (s *Signer) headerKeys(msg []byte) (keys []string, lf bool, err error) {
	names := s.Headers
	if names == nil {
		names = DefaultHeaders
	}
	over := s.Oversign
	if over == nil {
		over = DefaultOversign
	}
	counts := make([]int, len(names))
	from, fields := 0, 0
	first := true
	for rest := msg; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest
		if i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		if first {
			lf = i >= 0 && !bytes.HasSuffix(line, []byte("\r"))
			first = false
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // the end of the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if fields == 0 {
				return nil, false, fmt.Errorf("%w: the header starts with a continuation line", ErrMessage)
			}
			continue // a folded continuation
		}
		fields++
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false, fmt.Errorf("%w: header line without a field name", ErrMessage)
		}
		name := string(bytes.TrimRight(line[:colon], " \t"))
		if strings.EqualFold(name, "From") {
			from++
		}
		for j, n := range names {
			if strings.EqualFold(name, n) {
				counts[j]++
				break
			}
		}
	}
	if from == 0 {
		return nil, false, fmt.Errorf("%w: no From field (RFC 6376 §5.4 requires signing it)", ErrMessage)
	}
	listed := false
	for j, n := range names {
		c := counts[j]
		if slices.ContainsFunc(over, func(o string) bool { return strings.EqualFold(o, n) }) {
			c++
		}
		for range c {
			keys = append(keys, n)
		}
		listed = listed || strings.EqualFold(n, "From")
	}
	if !listed {
		// From must be signed whatever the list says.
		for range from {
			keys = append(keys, "From")
		}
	}
	return keys, lf, nil
}

func normDomain(d string) string { return strings.TrimSuffix(strings.ToLower(d), ".") }

func sortedDomains(m map[string][]*Key) []string {
	ds := make([]string, 0, len(m))
	for d := range m {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

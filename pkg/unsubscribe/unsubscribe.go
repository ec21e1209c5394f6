// Package unsubscribe implements one-click unsubscribe (RFC 8058): the
// signed token a List-Unsubscribe URL carries, and the header fields bulk
// mail gets.
//
// A token names the recipient, the tenant, brand and communication type
// they unsubscribe from, and the message and campaign it came with. It is
// signed with HMAC-SHA-256 (truncated to 128 bits), so a forged or altered
// token never unsubscribes anyone: only the platform can make one. Several
// keys verify, so keys can be rotated without breaking links already sent.
package unsubscribe

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Errors returned by Verify and NewSigner.
var (
	// ErrInvalidToken: the token is not one this package makes (wrong
	// encoding, version or layout).
	ErrInvalidToken = errors.New("unsubscribe: invalid token")
	// ErrBadSignature: the token is well formed but no key signed it: it
	// was forged or altered.
	ErrBadSignature = errors.New("unsubscribe: bad signature")
	// ErrNoKey: NewSigner needs at least one key of 16 bytes or more.
	ErrNoKey = errors.New("unsubscribe: a key of at least 16 bytes is required")
)

// Subject is what a token unsubscribes.
type Subject struct {
	Tenant string
	Brand  string
	// CommunicationType, when set, unsubscribes from that type only;
	// empty unsubscribes from everything of the brand.
	CommunicationType string
	Address           string
	MessageID         string
	CampaignID        string
}

const (
	version = 1
	macSize = 16
	// maxField bounds each field, so a token stays a reasonable URL.
	maxField = 512
)

// Signer makes and verifies tokens.
type Signer struct {
	keys [][]byte
}

// NewSigner returns a Signer: the first key signs, every key verifies.
func NewSigner(keys ...[]byte) (*Signer, error) {
	if len(keys) == 0 {
		return nil, ErrNoKey
	}
	for _, k := range keys {
		if len(k) < 16 {
			return nil, ErrNoKey
		}
	}
	return &Signer{keys: keys}, nil
}

// Token returns the signed token of s: URL-safe base64 without padding.
func (s *Signer) Token(sub Subject) string {
	var b bytes.Buffer
	b.WriteByte(version)
	for _, f := range fields(&sub) {
		v := *f
		if len(v) > maxField {
			v = v[:maxField]
		}
		b.Write(binary.AppendUvarint(nil, uint64(len(v))))
		b.WriteString(v)
	}
	b.Write(mac(s.keys[0], b.Bytes()))
	return base64.RawURLEncoding.EncodeToString(b.Bytes())
}

// Verify returns the subject of a token. Errors: ErrInvalidToken,
// ErrBadSignature.
func (s *Signer) Verify(token string) (Subject, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 1+macSize {
		return Subject{}, ErrInvalidToken
	}
	body, sum := raw[:len(raw)-macSize], raw[len(raw)-macSize:]
	ok := false
	for _, k := range s.keys {
		if hmac.Equal(mac(k, body), sum) {
			ok = true
			break
		}
	}
	if !ok {
		return Subject{}, ErrBadSignature
	}
	if body[0] != version {
		return Subject{}, ErrInvalidToken
	}
	var sub Subject
	rest := body[1:]
	for _, f := range fields(&sub) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > maxField || uint64(len(rest)-w) < n {
			return Subject{}, ErrInvalidToken
		}
		*f = string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
	}
	if len(rest) != 0 || sub.Address == "" || sub.Tenant == "" || sub.Brand == "" {
		return Subject{}, ErrInvalidToken
	}
	return sub, nil
}

func fields(s *Subject) []*string {
	return []*string{&s.Tenant, &s.Brand, &s.CommunicationType, &s.Address, &s.MessageID, &s.CampaignID}
}

func mac(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)[:macSize]
}

// PostBody is the body of a one-click POST (RFC 8058 §3.2), sent as
// application/x-www-form-urlencoded or multipart/form-data.
const PostBody = "List-Unsubscribe=One-Click"

// URL returns the one-click URL of token under base (an https URL):
// <base>/u/<token>.
func URL(base, token string) string {
	return strings.TrimSuffix(base, "/") + "/u/" + token
}

// Headers returns the List-Unsubscribe and List-Unsubscribe-Post field
// values (RFC 2369 §3.2, RFC 8058 §3.1): the HTTPS URL first, then the
// mailto alternative when mailto is set, whose subject carries the token
// so a mail handler can honour it too.
func Headers(link, mailto, token string) (listUnsubscribe, listUnsubscribePost string) {
	v := "<" + link + ">"
	if mailto != "" {
		v += ", <mailto:" + mailto + "?subject=" + url.PathEscape("unsubscribe "+token) + ">"
	}
	return v, PostBody
}

// IsOneClick reports whether a POST form carries the one-click field of
// RFC 8058 §3.2.
func IsOneClick(values url.Values) bool {
	for _, v := range values["List-Unsubscribe"] {
		if v == "One-Click" {
			return true
		}
	}
	return false
}

// Describe says what a subject unsubscribes, for pages and logs.
func (s Subject) Describe() string {
	if s.CommunicationType != "" {
		return fmt.Sprintf("%q mail of %s", s.CommunicationType, s.Brand)
	}
	return "all mail of " + s.Brand
}

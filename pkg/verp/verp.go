// Package verp builds and checks the return path of outgoing mail: a
// Variable Envelope Return Path on the brand's bounce domain whose local
// part carries a signed token. The token names the message, commits to its
// recipient, and is authenticated with HMAC-SHA256, so that a bounce or
// complaint addressed to it can be trusted (RFC 3464 DSNs go to the
// envelope sender, RFC 5321 §4.5.5) and a forged one cannot suppress an
// arbitrary recipient.
//
// Address form: "b" + base32(version ‖ message id (16 bytes) ‖
// recipient digest (4 bytes) ‖ MAC (9 bytes)) "@" bounce domain: 49
// characters of local part, inside RFC 5321's 64-octet limit. The MAC
// covers the bounce domain as well, so a token cannot be moved to another
// brand's domain.
package verp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by Parse and Signer methods.
var (
	// ErrNotVERP: the address is not one of ours (wrong form).
	ErrNotVERP = errors.New("verp: not a verp address")
	// ErrBadSignature: the form is right but the MAC does not check — a
	// forgery, or a key that was rotated out.
	ErrBadSignature = errors.New("verp: bad signature")
	// ErrRecipientMismatch: the token is genuine but names another recipient.
	ErrRecipientMismatch = errors.New("verp: recipient mismatch")
	// ErrNoKey: a Signer needs at least one key.
	ErrNoKey = errors.New("verp: no key")
	// ErrMessageID: message ids are 32 hexadecimal digits (128 bits).
	ErrMessageID = errors.New("verp: message id must be 32 hex digits")
	// ErrShortKey: a configured key is shorter than MinKeyLen.
	ErrShortKey = errors.New("verp: key too short")
)

// MinKeyLen is the shortest key ParseKeys accepts: 16 characters, so a key
// typed by hand still carries enough entropy for HMAC-SHA256.
const MinKeyLen = 16

const (
	version    = 1
	idLen      = 16
	digestLen  = 4
	macLen     = 9
	payloadLen = 1 + idLen + digestLen
	prefix     = "b"
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Signer makes and checks tokens. The first key signs; every key verifies,
// so keys can be rotated without losing the bounces of mail in flight.
type Signer struct {
	keys [][]byte
}

// NewSigner returns a Signer; keys[0] signs. It returns ErrNoKey without keys.
func NewSigner(keys ...[]byte) (*Signer, error) {
	var ks [][]byte
	for _, k := range keys {
		if len(k) > 0 {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return nil, ErrNoKey
	}
	return &Signer{keys: ks}, nil
}

// ParseKeys returns the Signer of configured keys (every service's
// MW_VERP_KEYS, the planner's first key signing). It returns ErrNoKey
// without keys and ErrShortKey for a key shorter than MinKeyLen.
func ParseKeys(keys []string) (*Signer, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: at least one key is required", ErrNoKey)
	}
	bs := make([][]byte, len(keys))
	for i, k := range keys {
		if len(k) < MinKeyLen {
			return nil, fmt.Errorf("%w: each key needs at least %d characters", ErrShortKey, MinKeyLen)
		}
		bs[i] = []byte(k)
	}
	return NewSigner(bs...)
}

// Token is what a VERP address tells once its signature checked.
type Token struct {
	// MessageID is the dispatch message id, 32 hex digits.
	MessageID string
	// BounceDomain is the domain of the address.
	BounceDomain string
	digest       [digestLen]byte
}

// MatchesRecipient reports whether rcpt is the recipient the token was made
// for (case-insensitively).
func (t Token) MatchesRecipient(rcpt string) bool {
	return recipientDigest(rcpt) == t.digest
}

// Address returns the return path for a message to rcpt, on bounceDomain.
// It returns ErrMessageID when messageID is not 32 hex digits.
func (s *Signer) Address(messageID, rcpt, bounceDomain string) (string, error) {
	id, err := hex.DecodeString(messageID)
	if err != nil || len(id) != idLen {
		return "", ErrMessageID
	}
	var buf [payloadLen + macLen]byte
	buf[0] = version
	copy(buf[1:], id)
	d := recipientDigest(rcpt)
	copy(buf[1+idLen:], d[:])
	domain := strings.ToLower(bounceDomain)
	copy(buf[payloadLen:], mac(s.keys[0], domain, buf[:payloadLen]))
	return prefix + enc.EncodeToString(buf[:]) + "@" + domain, nil
}

// Parse checks addr and returns its token. It returns ErrNotVERP for an
// address of another form and ErrBadSignature when no key verifies it.
func (s *Signer) Parse(addr string) (Token, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return Token{}, ErrNotVERP
	}
	local, domain := strings.ToLower(addr[:at]), strings.ToLower(addr[at+1:])
	// Some MTAs append a "+detail" or quote the local part; take the token
	// as written, nothing else.
	if !strings.HasPrefix(local, prefix) {
		return Token{}, ErrNotVERP
	}
	raw, err := enc.DecodeString(local[len(prefix):])
	if err != nil || len(raw) != payloadLen+macLen || raw[0] != version {
		return Token{}, ErrNotVERP
	}
	for _, k := range s.keys {
		if hmac.Equal(raw[payloadLen:], mac(k, domain, raw[:payloadLen])) {
			t := Token{MessageID: hex.EncodeToString(raw[1 : 1+idLen]), BounceDomain: domain}
			copy(t.digest[:], raw[1+idLen:payloadLen])
			return t, nil
		}
	}
	return Token{}, ErrBadSignature
}

// Verify parses addr and checks that it was made for rcpt. It returns the
// errors of Parse, or ErrRecipientMismatch.
func (s *Signer) Verify(addr, rcpt string) (Token, error) {
	t, err := s.Parse(addr)
	if err != nil {
		return Token{}, err
	}
	if !t.MatchesRecipient(rcpt) {
		return Token{}, fmt.Errorf("%w: token of message %s", ErrRecipientMismatch, t.MessageID)
	}
	return t, nil
}

func mac(key []byte, domain string, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("mailwave-verp-v1\x00"))
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write(payload)
	return h.Sum(nil)[:macLen]
}

func recipientDigest(rcpt string) [digestLen]byte {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(rcpt))))
	var d [digestLen]byte
	copy(d[:], sum[:])
	return d
}

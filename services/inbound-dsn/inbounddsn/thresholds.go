package inbounddsn

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrThresholds wraps every problem of a thresholds file.
var ErrThresholds = errors.New("inbounddsn: thresholds")

// Limits are a brand's bounce thresholds: a recipient is suppressed for
// the brand once it collects Hard hard bounces, or Soft soft bounces,
// within Window. Zero disables a threshold.
type Limits struct {
	Hard   int           `yaml:"hard"`
	Soft   int           `yaml:"soft"`
	Window time.Duration `yaml:"window"`
	// ReplyTo is where replies and auto-replies to the brand's return
	// paths are forwarded; empty keeps them in the INBOUND stream only.
	ReplyTo string `yaml:"reply_to"`
}

// Thresholds is the thresholds file:
//
//	default: {hard: 1, soft: 5, window: 720h}
//	# statuses (RFC 3463) a failed DSN is retried for instead of
//	# counted: a class ("4") or a code prefix ("5.2.2")
//	retry: ["4", "5.2.2"]
//	retry_after: 1h
//	brands:
//	  shop: {hard: 1, soft: 3, window: 720h, reply_to: care@shop.example}
//	  acme/news: {hard: 2, soft: 5, window: 168h}
//
// A brand key is "<tenant>/<brand>" or "<brand>" for every tenant; the
// first that names a message's brand applies, else default.
type Thresholds struct {
	Default    Limits            `yaml:"default"`
	Retry      []string          `yaml:"retry"`
	RetryAfter time.Duration     `yaml:"retry_after"`
	Brands     map[string]Limits `yaml:"brands"`
}

// DefaultThresholds is what applies without a file: one hard bounce, or
// five soft bounces within 30 days, suppress; a mailbox-full or temporary
// failure reported after acceptance is retried an hour later.
func DefaultThresholds() *Thresholds {
	return &Thresholds{
		Default:    Limits{Hard: 1, Soft: 5, Window: 30 * 24 * time.Hour},
		Retry:      []string{"4", "5.2.2"},
		RetryAfter: time.Hour,
	}
}

var statusPrefix = regexp.MustCompile(`^[245](\.[0-9]{1,3}(\.[0-9]{1,3})?)?$`)

// LoadThresholds reads and validates a thresholds file; fields it leaves
// out keep DefaultThresholds' values. Errors wrap ErrThresholds.
func LoadThresholds(path string) (*Thresholds, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrThresholds, err)
	}
	return ParseThresholds(raw)
}

// ParseThresholds reads and validates a thresholds document. Unknown
// fields are errors, so a typo does not silently keep a default.
func ParseThresholds(raw []byte) (*Thresholds, error) {
	t := DefaultThresholds()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(t); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrThresholds, err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// Validate checks every limit. Errors wrap ErrThresholds and name the
// entry.
func (t *Thresholds) Validate() error {
	check := func(name string, l Limits) error {
		if l.Hard < 0 || l.Soft < 0 {
			return fmt.Errorf("%w: %s: negative threshold", ErrThresholds, name)
		}
		if (l.Hard > 0 || l.Soft > 0) && l.Window <= 0 {
			return fmt.Errorf("%w: %s: window must be positive", ErrThresholds, name)
		}
		if l.ReplyTo != "" && (!strings.Contains(l.ReplyTo, "@") || strings.ContainsAny(l.ReplyTo, " <>\r\n")) {
			return fmt.Errorf("%w: %s: reply_to %q is not an address", ErrThresholds, name, l.ReplyTo)
		}
		return nil
	}
	if err := check("default", t.Default); err != nil {
		return err
	}
	for k, l := range t.Brands {
		if k == "" || strings.Count(k, "/") > 1 {
			return fmt.Errorf("%w: brand key %q: want <brand> or <tenant>/<brand>", ErrThresholds, k)
		}
		if err := check("brands."+k, l); err != nil {
			return err
		}
	}
	for _, s := range t.Retry {
		if !statusPrefix.MatchString(s) {
			return fmt.Errorf("%w: retry: %q is not a status class or prefix (4, 5.2, 5.2.2)", ErrThresholds, s)
		}
	}
	if len(t.Retry) > 0 && t.RetryAfter <= 0 {
		return fmt.Errorf("%w: retry_after must be positive", ErrThresholds)
	}
	return nil
}

// For returns the limits of a brand.
func (t *Thresholds) For(tenant, brand string) Limits {
	if l, ok := t.Brands[tenant+"/"+brand]; ok {
		return l
	}
	if l, ok := t.Brands[brand]; ok {
		return l
	}
	return t.Default
}

// Retryable reports whether a failure with RFC 3463 status is retried
// rather than counted: it matches a retry entry as a whole code or on a
// dot boundary ("5.2" matches "5.2.2", not "5.22.1").
func (t *Thresholds) Retryable(status string) bool {
	for _, p := range t.Retry {
		if status == p || strings.HasPrefix(status, p+".") {
			return true
		}
	}
	return false
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailwave/mailwave/pkg/spf"
	"github.com/mailwave/mailwave/pkg/spf/dnstest"
)

// errSuite marks a suite file that cannot be read as the openspf format.
var errSuite = errors.New("spfsuite: bad suite")

// scenario is one YAML document of the suite: zone data and the tests that
// run against it.
type scenario struct {
	Description string                 `yaml:"description"`
	Tests       map[string]suiteTest   `yaml:"tests"`
	ZoneData    map[string][]yaml.Node `yaml:"zonedata"`
}

type suiteTest struct {
	Description string    `yaml:"description"`
	Helo        string    `yaml:"helo"`
	Host        string    `yaml:"host"`
	MailFrom    string    `yaml:"mailfrom"`
	Result      wordList  `yaml:"result"`
	Explanation string    `yaml:"explanation"`
	Spec        yaml.Node `yaml:"spec"`
}

// wordList is a result: one word, or a list of acceptable words.
type wordList []string

func (w *wordList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*w = wordList{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*w = l
	return nil
}

// parseSuite reads every document of a suite file.
func parseSuite(r io.Reader) ([]scenario, error) {
	dec := yaml.NewDecoder(r)
	var out []scenario
	for {
		var s scenario
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errSuite, err)
		}
		out = append(out, s)
	}
}

// buildZone turns a scenario's zone data into a zone, following the suite's
// conventions: SPF (type 99) records are also served as TXT at a name that
// has no TXT record; "TXT: NONE" says the name has no TXT record (and stops
// that copy); TIMEOUT makes every query for the name go unanswered.
func buildZone(data map[string][]yaml.Node) (*dnstest.Zone, error) {
	z := dnstest.NewZone()
	for name, recs := range data {
		z.Exists(name)
		var spfRecs [][]string
		hasTXT := false
		for _, n := range recs {
			if n.Kind == yaml.ScalarNode && n.Value == "TIMEOUT" {
				z.Timeout(name)
				continue
			}
			if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
				return nil, fmt.Errorf("%w: %s: record at line %d is not TYPE: value", errSuite, name, n.Line)
			}
			typ, val := n.Content[0].Value, n.Content[1]
			switch typ {
			case "TIMEOUT":
				z.Timeout(name)
			case "SPF", "TXT":
				strs, err := strings1(val)
				if err != nil {
					return nil, fmt.Errorf("%w: %s %s: %w", errSuite, name, typ, err)
				}
				if typ == "SPF" {
					spfRecs = append(spfRecs, strs)
					continue
				}
				hasTXT = true
				if len(strs) == 1 && strs[0] == "NONE" {
					continue
				}
				z.TXT(name, strs...)
			case "A", "AAAA":
				strs, err := strings1(val)
				if err != nil {
					return nil, fmt.Errorf("%w: %s %s: %w", errSuite, name, typ, err)
				}
				for _, s := range strs {
					a, err := netip.ParseAddr(s)
					if err != nil {
						return nil, fmt.Errorf("%w: %s %s: %w", errSuite, name, typ, err)
					}
					z.Addr(name, a)
				}
			case "MX":
				var mx []yaml.Node
				if err := val.Decode(&mx); err != nil || len(mx) != 2 {
					return nil, fmt.Errorf("%w: %s MX at line %d: want [pref, host]", errSuite, name, val.Line)
				}
				var pref uint16
				if err := mx[0].Decode(&pref); err != nil {
					return nil, fmt.Errorf("%w: %s MX preference: %w", errSuite, name, err)
				}
				z.MX(name, pref, mx[1].Value)
			case "PTR":
				z.PTR(name, val.Value)
			default:
				return nil, fmt.Errorf("%w: %s: unsupported record type %q", errSuite, name, typ)
			}
		}
		if !hasTXT {
			for _, strs := range spfRecs {
				z.TXT(name, strs...)
			}
		}
	}
	return z, nil
}

// strings1 decodes a scalar or a list of scalars.
func strings1(n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}, nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return nil, err
	}
	return l, nil
}

// caseResult is the outcome of one test.
type caseResult struct {
	Scenario, Name string
	Want           []string
	Got            spf.Verdict
	Pass           bool
	// WantExp is the expected explanation ("" when the test gives none);
	// ExpOK says whether ours matched.
	WantExp string
	ExpOK   bool
}

// summary is the outcome of a whole suite.
type summary struct {
	Cases []caseResult
}

func (s summary) passed() int {
	n := 0
	for _, c := range s.Cases {
		if c.Pass {
			n++
		}
	}
	return n
}

func (s summary) rate() float64 {
	if len(s.Cases) == 0 {
		return 0
	}
	return float64(s.passed()) / float64(len(s.Cases))
}

// runSuite runs every test of every scenario against that scenario's zone,
// served by a loopback DNS server, through spf.Checker with the DNSClient the
// command line builds for --dns. Tests of one scenario run concurrently, at
// most parallel at a time.
func runSuite(ctx context.Context, scenarios []scenario, timeout time.Duration, parallel int, now time.Time) (summary, error) {
	var sum summary
	if parallel < 1 {
		parallel = 1
	}
	for _, sc := range scenarios {
		zone, err := buildZone(sc.ZoneData)
		if err != nil {
			return sum, err
		}
		srv, err := dnstest.Start(zone)
		if err != nil {
			return sum, err
		}
		checker := &spf.Checker{Resolver: spf.NewResolver(srv.Addr(), timeout)}
		names := make([]string, 0, len(sc.Tests))
		for n := range sc.Tests {
			names = append(names, n)
		}
		sort.Strings(names)
		results := make([]caseResult, len(names))
		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		for i, name := range names {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				results[i] = runCase(ctx, checker, sc.Description, name, sc.Tests[name], now)
			}()
		}
		wg.Wait()
		if err := srv.Close(); err != nil {
			return sum, err
		}
		sum.Cases = append(sum.Cases, results...)
	}
	return sum, nil
}

func runCase(ctx context.Context, checker *spf.Checker, scenario, name string, t suiteTest, now time.Time) caseResult {
	cr := caseResult{Scenario: scenario, Name: name, Want: t.Result, WantExp: t.Explanation}
	ip, err := netip.ParseAddr(t.Host)
	if err != nil {
		cr.Got = spf.Verdict{Result: spf.PermError, Err: fmt.Errorf("%w: host %q", spf.ErrInvalidIP, t.Host)}
		return cr
	}
	cr.Got = checker.Check(ctx, spf.Query{IP: ip, Helo: t.Helo, Sender: t.MailFrom}, now)
	cr.Pass = slices.Contains(t.Result, string(cr.Got.Result))
	switch t.Explanation {
	case "":
		cr.ExpOK = true
	case "DEFAULT":
		// The suite's word for "the receiver's own text": no exp= applied.
		cr.ExpOK = cr.Got.Explanation == ""
	default:
		cr.ExpOK = cr.Got.Explanation == t.Explanation
	}
	return cr
}

// report prints each failure, the explanation mismatches and the pass rate.
func report(w io.Writer, sum summary) {
	expTotal, expOK := 0, 0
	for _, c := range sum.Cases {
		if !c.Pass {
			fmt.Fprintf(w, "FAIL %s / %s: got %s, want %s", c.Scenario, c.Name, c.Got.Result, strings.Join(c.Want, "|"))
			if c.Got.Err != nil {
				fmt.Fprintf(w, " (%v)", c.Got.Err)
			}
			fmt.Fprintln(w)
		}
		if c.WantExp == "" {
			continue
		}
		expTotal++
		if c.ExpOK {
			expOK++
		} else {
			fmt.Fprintf(w, "explanation %s / %s: got %q, want %q\n", c.Scenario, c.Name, c.Got.Explanation, c.WantExp)
		}
	}
	fmt.Fprintf(w, "explanations matched: %d of %d (optional)\n", expOK, expTotal)
	fmt.Fprintf(w, "pass rate: %.1f%% (%d of %d)\n", 100*sum.rate(), sum.passed(), len(sum.Cases))
}

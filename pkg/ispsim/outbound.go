package ispsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

// ErrNoRoute is returned when the simulator cannot find where to send a
// report: no route override, and no usable MX or A record in its DNS.
var ErrNoRoute = errors.New("ispsim: no route")

// after runs f once the simulator's clock has moved on by d, in a goroutine
// that Close waits for.
func (s *Sim) after(d time.Duration, f func()) {
	s.clock.AfterFunc(d, func() { s.goTracked(f) })
}

// goTracked runs f in a goroutine unless the simulator is closing.
func (s *Sim) goTracked(f func()) {
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	if s.closing {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// targets lists the host:ports to try for mail to domain: the route
// override, else the MX hosts in preference order (RFC 5321 §5.1), else
// the domain's own address records.
func (s *Sim) targets(domain string) ([]string, error) {
	d := strings.TrimSuffix(canonical(domain), ".")
	s.routesMu.RLock()
	hp, ok := s.routes[d]
	if !ok {
		hp, ok = s.routes["*"]
	}
	s.routesMu.RUnlock()
	if ok {
		return []string{hp}, nil
	}
	port := strconv.Itoa(s.profile.OutboundPort)
	mxs, rcode := s.zone.mx(d)
	if rcode != dns.RcodeSuccess && rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%w: %s: MX lookup answered %s", ErrNoRoute, domain, dns.RcodeToString[rcode])
	}
	if len(mxs) == 1 && mxs[0].Host == "." {
		return nil, fmt.Errorf("%w: %s publishes a null MX (RFC 7505)", ErrNoRoute, domain)
	}
	hosts := []string{d}
	if len(mxs) > 0 {
		hosts = hosts[:0]
		for _, m := range mxs {
			hosts = append(hosts, m.Host)
		}
	}
	var out []string
	for _, h := range hosts {
		for _, a := range s.zone.addrs(h) {
			out = append(out, net.JoinHostPort(a.String(), port))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s has no address", ErrNoRoute, domain)
	}
	return out, nil
}

// deliver sends data from the null reverse-path to rcpt (reports must not
// trigger reports, RFC 5321 §4.5.5), trying each target. Attempts that fail
// for a temporary reason are retried a few times in real time, because a
// test's inbound server may still be starting.
func (s *Sim) deliver(helo, rcpt string, data []byte) (addr string, attempts int, err error) {
	backoff := 100 * time.Millisecond
	for attempts = 1; ; attempts++ {
		var targets []string
		targets, err = s.targets(domainOf(rcpt))
		if err != nil {
			return "", attempts, err
		}
		for _, addr = range targets {
			if err = s.sendOnce(addr, helo, rcpt, data); err == nil {
				return addr, attempts, nil
			}
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code >= 500 {
				return addr, attempts, err
			}
		}
		if attempts >= 5 || !s.sleep(backoff) {
			return addr, attempts, err
		}
		backoff *= 3
	}
}

func (s *Sim) sendOnce(addr, helo, rcpt string, data []byte) error {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := smtp.NewClient(nc)
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		return err
	}
	if err := c.Mail("", nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// headerBlock returns the header section of a message, up to and
// including the blank line.
func headerBlock(data []byte) []byte {
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		return data[:i+4]
	}
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		return data[:i+2]
	}
	return data
}

// newMessageID makes a unique Message-ID for a report the simulator writes.
func (s *Sim) newMessageID(host string) string {
	return fmt.Sprintf("<%d.%d.ispsim@%s>", s.clock.Now().Unix(), s.idSeq.Add(1), host)
}

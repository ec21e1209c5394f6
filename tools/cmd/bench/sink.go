package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sink is a fast SMTP server on loopback (RFC 5321 with PIPELINING,
// 8BITMIME and SIZE), the stand-in for every mailbox provider: it accepts
// everything, finds each message's X-Bench-Id header and reports when its
// final "." arrived. It is written for speed rather than on go-smtp, whose
// per-byte reader would cost the machine more than a remote server costs
// a real sender, as Postfix's smtp-sink is. The pipeline and Postfix
// deliver into the same sink, one phase after the other; it keeps the
// first message of each phase for checking (its DKIM signatures).
type sink struct {
	l    net.Listener
	port int
	wg   sync.WaitGroup

	on     atomic.Pointer[func(idx int, at time.Time)]
	mu     sync.Mutex
	sample []byte
	conns  map[net.Conn]struct{}
	closed bool
}

func startSink(addr netip.Addr) (*sink, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s := &sink{l: l, port: l.Addr().(*net.TCPAddr).Port, conns: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				s.serve(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			})
		}
	})
	return s, nil
}

// phase directs the messages that arrive from now on to on, and forgets
// the sample.
func (s *sink) phase(on func(idx int, at time.Time)) {
	s.mu.Lock()
	s.sample = nil
	s.mu.Unlock()
	s.on.Store(&on)
}

// first returns the first message of the phase as received.
func (s *sink) first() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sample
}

func (s *sink) Port() int { return s.port }

func (s *sink) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

var (
	ehloReply   = []byte("250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 67108864\r\n250 ENHANCEDSTATUSCODES\r\n")
	okReply     = []byte("250 2.0.0 OK\r\n")
	dataReply   = []byte("354 Go ahead\r\n")
	queuedReply = []byte("250 2.0.0 OK: queued\r\n")
	byeReply    = []byte("221 2.0.0 Bye\r\n")
	badReply    = []byte("502 5.5.2 Not implemented\r\n")
	benchHeader = []byte("X-Bench-Id: ")
)

// serve runs one session. Replies are buffered and flushed only when no
// more commands are waiting, as RFC 2920 §3.1 lets a pipelining server.
func (s *sink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	w.WriteString("220 sink.bench ESMTP\r\n")
	w.Flush()
	var msg bytes.Buffer
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		cmd := line
		if len(cmd) > 4 {
			cmd = cmd[:4]
		}
		switch string(bytes.ToUpper(cmd)) {
		case "EHLO", "HELO":
			w.Write(ehloReply)
		case "MAIL", "RCPT", "RSET", "NOOP":
			w.Write(okReply)
		case "DATA":
			w.Write(dataReply)
			w.Flush()
			if err := s.data(r, &msg); err != nil {
				return
			}
			w.Write(queuedReply)
		case "QUIT":
			w.Write(byeReply)
			w.Flush()
			return
		default:
			w.Write(badReply)
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// data reads content up to the lone "." (RFC 5321 §4.5.2, undoing the
// dot-stuffing), then reports the message.
func (s *sink) data(r *bufio.Reader, msg *bytes.Buffer) error {
	msg.Reset()
	idx, inHeader := -1, true
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			msg.Write(line)
			continue
		}
		if err != nil {
			return err
		}
		if len(line) >= 1 && line[0] == '.' {
			if len(line) == 3 && line[1] == '\r' || len(line) == 2 {
				break
			}
			line = line[1:]
		}
		if inHeader {
			if len(line) <= 2 {
				inHeader = false
			} else if bytes.HasPrefix(line, benchHeader) {
				idx, _ = strconv.Atoi(string(bytes.TrimRight(line[len(benchHeader):], "\r\n")))
			}
		}
		msg.Write(line)
	}
	at := time.Now()
	s.mu.Lock()
	if s.sample == nil {
		s.sample = bytes.Clone(msg.Bytes())
	}
	s.mu.Unlock()
	if on := s.on.Load(); on != nil {
		(*on)(idx, at)
	}
	return nil
}

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is a fast SMTP server that discards content after reading the
// X-Bench-Id header, and reports when each message's DATA ended.
type sink struct {
	srv  *smtp.Server
	l    net.Listener
	port int
}

func startSink(addr netip.Addr, onMessage func(idx int, at time.Time)) (*sink, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	srv := smtp.NewServer(&sinkBackend{on: onMessage})
	srv.Domain = "sink.bench"
	srv.MaxMessageBytes = 64 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.EnableSMTPUTF8 = true
	go func() { _ = srv.Serve(l) }()
	return &sink{srv: srv, l: l, port: l.Addr().(*net.TCPAddr).Port}, nil
}

func (s *sink) Port() int    { return s.port }
func (s *sink) Close() error { return s.srv.Close() }

type sinkBackend struct{ on func(int, time.Time) }

func (b *sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &sinkSession{on: b.on}, nil
}

type sinkSession struct {
	on func(int, time.Time)
	br *bufio.Reader
}

func (s *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sinkSession) Reset()                               {}
func (s *sinkSession) Logout() error                        { return nil }

var benchHeader = []byte("X-Bench-Id: ")

func (s *sinkSession) Data(r io.Reader) error {
	if s.br == nil {
		s.br = bufio.NewReaderSize(r, 16<<10)
	} else {
		s.br.Reset(r)
	}
	idx := -1
	for {
		line, err := s.br.ReadSlice('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 || errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if bytes.HasPrefix(line, benchHeader) {
			idx, _ = strconv.Atoi(string(bytes.TrimSpace(line[len(benchHeader):])))
		}
	}
	if _, err := io.Copy(io.Discard, s.br); err != nil {
		return err
	}
	s.on(idx, time.Now())
	return nil
}

package smtpclient_test

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

// sink is a fast SMTP server for benchmarks: it accepts everything,
// answers a pipelined group in one write (flushing when nothing more is
// buffered, as a pipelining server should) and discards the content.
func sink(b *testing.B) string {
	return scripted(b, func(c net.Conn, r *bufio.Reader) {
		w := bufio.NewWriter(c)
		w.WriteString("220 sink.test ESMTP\r\n")
		w.Flush()
		inData := false
		for {
			if r.Buffered() == 0 && w.Buffered() > 0 {
				if w.Flush() != nil {
					return
				}
			}
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			if inData {
				if bytes.Equal(line, []byte(".\r\n")) {
					inData = false
					w.WriteString("250 2.0.0 Ok: queued as 4XyZ9\r\n")
				}
				continue
			}
			switch {
			case bytes.HasPrefix(line, []byte("EHLO")):
				w.WriteString("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 52428800\r\n250 ENHANCEDSTATUSCODES\r\n")
			case bytes.HasPrefix(line, []byte("DATA")):
				inData = true
				w.WriteString("354 End data with <CR><LF>.<CR><LF>\r\n")
			case bytes.HasPrefix(line, []byte("QUIT")):
				w.WriteString("221 2.0.0 Bye\r\n")
				w.Flush()
				return
			default:
				w.WriteString("250 2.1.0 Ok\r\n")
			}
		}
	})
}

// BenchmarkSend10KB sends 10 KB messages over one reused, pipelined
// connection. Run with -cpu 1 to see what one core does, client and sink
// together.
func BenchmarkSend10KB(b *testing.B) {
	addr := sink(b)
	c, err := dialer("bench.sender.test").Dial(b.Context(), addr, "sink.test")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := message(10 << 10)
	rcpts := []string{"rcpt@dest.test"}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(b.Context(), "bounce+x@sender.test", rcpts, msg, smtpclient.SendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

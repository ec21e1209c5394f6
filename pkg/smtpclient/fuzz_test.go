package smtpclient_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		in       string
		code     int
		enhanced string
		text     string
		wantErr  bool
	}{
		{in: "250 OK\r\n", code: 250, text: "OK"},
		{in: "250\r\n", code: 250},
		{in: "220 mx.test ESMTP\n", code: 220, text: "mx.test ESMTP"},
		{in: "550 5.1.1 <x@y>: Recipient address rejected\r\n", code: 550, enhanced: "5.1.1", text: "<x@y>: Recipient address rejected"},
		{in: "550-5.1.1 The email account that you tried to reach does not exist.\r\n550-5.1.1 Please try\r\n550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x - gsmtp\r\n",
			code: 550, enhanced: "5.1.1", text: "The email account that you tried to reach does not exist.\nPlease try\nhttps://support.google.com/mail/?p=NoSuchUser x - gsmtp"},
		{in: "421-first\r\n421 4.7.0 last\r\n", code: 421, enhanced: "4.7.0", text: "first\nlast"},
		{in: "250 2.0.0\r\n", code: 250, enhanced: "2.0.0"},
		{in: "451 5.0.0 class differs\r\n", code: 451, text: "5.0.0 class differs"},
		{in: "250 2.0.0.1 not a code\r\n", code: 250, text: "2.0.0.1 not a code"},
		{in: "250 2.1000.0 too long\r\n", code: 250, text: "2.1000.0 too long"},
		{in: "250 " + strings.Repeat("x", 300) + "\r\n", code: 250, text: strings.Repeat("x", 300)},
		{in: "250-a\r\n251 b\r\n", wantErr: true},
		{in: "25\r\n", wantErr: true},
		{in: "abc ok\r\n", wantErr: true},
		{in: "650 no\r\n", wantErr: true},
		{in: "250xok\r\n", wantErr: true},
		{in: "250-unterminated\r\n", wantErr: true},
		{in: "250 " + strings.Repeat("x", 20000) + "\r\n", wantErr: true},
	}
	for _, tc := range tests {
		code, enh, text, err := smtpclient.ParseReply([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("%.40q: error %v", tc.in, err)
			continue
		}
		if code != tc.code || enh != tc.enhanced || text != tc.text {
			t.Errorf("%.40q: got %d %q %q, want %d %q %q", tc.in, code, enh, text, tc.code, tc.enhanced, tc.text)
		}
	}
}

var enhancedRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"250 OK\r\n", "550-5.1.1 a\r\n550 5.1.1 b\r\n", "421 4.7.0\r\n", "250-x\n250 y\n", "2"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		code, enh, text, err := smtpclient.ParseReply(in)
		if err != nil {
			return
		}
		if code < 200 || code > 599 {
			t.Errorf("code %d", code)
		}
		if enh != "" && (!enhancedRE.MatchString(enh) || int(enh[0]-'0') != code/100) {
			t.Errorf("enhanced code %q for %d", enh, code)
		}
		if strings.Count(text, "\n") >= bytes.Count(in, []byte("\n")) {
			t.Errorf("text %q has more lines than the reply %q", text, in)
		}
	})
}

func TestDotStuff(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{".a\r\n", "..a\r\n.\r\n"},
		{"a\r\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n"},
		{"a\n.b\n", "a\r\n..b\r\n.\r\n"},
		{"\n\n", "\r\n\r\n.\r\n"},
		{"a\r\n.", "a\r\n..\r\n.\r\n"},
	}
	for _, tc := range tests {
		if got := string(smtpclient.DotStuff([]byte(tc.in))); got != tc.want {
			t.Errorf("DotStuff(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzDotStuff checks that a receiver that splits on CRLF (RFC 5321
// §4.5.2) gets back the content, with bare LF made CRLF, and sees the end
// of data only at the end.
func FuzzDotStuff(f *testing.F) {
	for _, s := range []string{"", ".", "a\r\n.\r\n", "\n.\n", ".\r\n..\r\n", "x\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := smtpclient.DotStuff(in)
		if bytes.Contains(bytes.ReplaceAll(out, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare LF in %q", out)
		}
		lines := strings.Split(string(out), "\r\n")
		if lines[len(lines)-1] != "" || lines[len(lines)-2] != "." {
			t.Fatalf("no terminator in %q", out)
		}
		lines = lines[:len(lines)-2]
		for i, l := range lines {
			if l == "." {
				t.Fatalf("early end of data in %q", out)
			}
			lines[i] = strings.TrimPrefix(l, ".")
		}
		got := strings.Join(lines, "\r\n")
		if len(lines) > 0 {
			got += "\r\n"
		}
		want := crlf(in)
		if len(in) > 0 && in[len(in)-1] != '\n' {
			want += "\r\n"
		}
		if got != want {
			t.Fatalf("round trip of %q gave %q, want %q", in, got, want)
		}
	})
}

// crlf turns each LF not preceded by CR into CRLF.
func crlf(in []byte) string {
	var b strings.Builder
	for i, c := range in {
		if c == '\n' && (i == 0 || in[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(c)
	}
	return b.String()
}

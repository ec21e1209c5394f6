package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const bounce = "From: MAILER-DAEMON@mx.test\r\nSubject: failure notice\r\n\r\n" +
	"<gone@receiver.test>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n" +
	"<full@receiver.test>:\r\n552 5.2.2 Mailbox full\r\n"

const reply = "From: ann@receiver.test\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\nAway.\r\n"

func TestMeasure(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("bounce.eml", bounce)
	write("reply.eml", reply)
	// The labels list the records out of order (matching is by
	// recipient) and expect one reason the parser does not give.
	write("labels.jsonl", `{"file":"bounce.eml","is_bounce":true,"recipient_confidence":"high","records":[`+
		`{"recipient":"full@receiver.test","reason":"mailboxfull","hardbounce":false,"status":"5.2.2"},`+
		`{"recipient":"gone@receiver.test","reason":"suspend","hardbounce":true,"status":"5.1.1"}]}`+"\n"+
		`{"file":"reply.eml","is_bounce":false,"recipient_confidence":"high","records":[]}`+"\n")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-corpus", dir}, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"reason accuracy:     50.00% (1/2 records)",
		"hard/soft accuracy: 100.00% (2/2 records)",
		"recipient accuracy: 100.00% (2/2 records",
		"not-a-bounce messages treated as bounces: 0",
		"suspend          !userunknown=1",
		"bounce.eml (-): want gone@receiver.test/suspend hard=true, got gone@receiver.test/userunknown hard=true",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}

func TestMeasureNeedsCorpus(t *testing.T) {
	if err := run(context.Background(), nil, &bytes.Buffer{}); err == nil {
		t.Error("no error without -corpus")
	}
}

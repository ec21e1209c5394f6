package arf_test

import (
	"fmt"

	"github.com/mailwave/mailwave/pkg/arf"
)

func ExampleParse() {
	raw := []byte("From: fbl@isp.example\r\n" +
		"Subject: Spam report\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n" +
		"\r\n" +
		"--b\r\n" +
		"Content-Type: text/plain\r\n" +
		"\r\n" +
		"A user complained about your message.\r\n" +
		"--b\r\n" +
		"Content-Type: message/feedback-report\r\n" +
		"\r\n" +
		"Feedback-Type: abuse\r\n" +
		"User-Agent: ExampleFBL/1.0\r\n" +
		"Version: 1\r\n" +
		"Source-IP: 192.0.2.1\r\n" +
		"Original-Rcpt-To: <redacted@isp.example>\r\n" +
		"--b\r\n" +
		"Content-Type: text/rfc822-headers\r\n" +
		"\r\n" +
		"Return-Path: <bounce-1234@bounce.brand.example>\r\n" +
		"Message-ID: <m1@brand.example>\r\n" +
		"Feedback-ID: campaign7:tenant1:bulk:mailwave\r\n" +
		"--b--\r\n")
	r, err := arf.Parse(raw)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.FeedbackType, r.SourceIP, r.Variant)
	fmt.Println("redacted:", r.Redacted, "senders:", r.SenderCandidates())
	fmt.Println("feedback-id sender:", r.Reported.FeedbackID.SenderID)
	// Output:
	// abuse 192.0.2.1 rfc5965
	// redacted: true senders: [bounce-1234@bounce.brand.example]
	// feedback-id sender: mailwave
}

package smtpclient

import (
	"bufio"
	"bytes"
)

// ParseReply exposes the reply parser to the black-box fuzz test.
func ParseReply(in []byte) (code int, enhanced, text string, err error) {
	var r reply
	if err := r.read(bufio.NewReaderSize(bytes.NewReader(in), 64)); err != nil {
		return 0, "", "", err
	}
	return r.code, r.enhanced(), r.message(), nil
}

// DotStuff exposes the content writer to the black-box tests.
func DotStuff(data []byte) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeDotStuffed(w, data)
	w.Flush()
	return buf.Bytes()
}

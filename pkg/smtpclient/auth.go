package smtpclient

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
)

// PasswordAuth returns a Dialer.Auth that logs in with username and
// password using the first of mechanisms the server offers: "PLAIN" (RFC
// 4616) or "LOGIN" (draft-murchison-sasl-login, which many smarthosts
// still want). No mechanisms means PLAIN, else LOGIN. The password is
// held in the closure only; nothing here prints it.
func PasswordAuth(username, password string, mechanisms ...string) func(offered []string) (sasl.Client, error) {
	if len(mechanisms) == 0 {
		mechanisms = []string{sasl.Plain, sasl.Login}
	}
	return func(offered []string) (sasl.Client, error) {
		for _, m := range mechanisms {
			m = strings.ToUpper(m)
			if !slices.Contains(offered, m) {
				continue
			}
			switch m {
			case sasl.Plain:
				return sasl.NewPlainClient("", username, password), nil
			case sasl.Login:
				return &loginClient{username: username, password: password}, nil
			}
		}
		return nil, fmt.Errorf("%w: want %s, server offers %s", ErrAuthUnsupported,
			strings.Join(mechanisms, " or "), strings.Join(offered, " "))
	}
}

// loginClient answers the LOGIN mechanism's prompts by what they ask
// ("Username:", "Password:"), sending no initial response: servers differ
// in the prompts' order and in whether they accept an initial response,
// and go-sasl's client assumes both.
type loginClient struct{ username, password string }

func (c *loginClient) Start() (string, []byte, error) { return sasl.Login, nil, nil }

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	switch p := strings.ToLower(string(challenge)); {
	case strings.HasPrefix(p, "user"):
		return []byte(c.username), nil
	case strings.HasPrefix(p, "pass"):
		return []byte(c.password), nil
	}
	return nil, sasl.ErrUnexpectedServerChallenge
}

// maxAuthSteps bounds a SASL exchange against a server that challenges
// forever.
const maxAuthSteps = 8

// auth runs SMTP AUTH (RFC 4954) with the client newAuth picks for the
// offered mechanisms, only over TLS. A refusal is an *Error with Phase
// auth and the reply (535 5.7.8 for bad credentials, RFC 4954 §6); the
// session is then closed after QUIT.
func (c *Client) auth(newAuth func(offered []string) (sasl.Client, error)) error {
	if !c.tlsUsed {
		c.quietQuit()
		return &Error{Phase: PhaseAuth, Err: ErrAuthNeedsTLS}
	}
	params, ok := c.exts["AUTH"]
	if !ok {
		c.quietQuit()
		return &Error{Phase: PhaseAuth, Err: fmt.Errorf("%w: AUTH not offered", ErrAuthUnsupported)}
	}
	offered := strings.Fields(strings.ToUpper(params))
	sc, err := newAuth(offered)
	if err != nil {
		c.quietQuit()
		if !errors.Is(err, ErrAuthUnsupported) {
			err = fmt.Errorf("%w: %w", ErrAuthUnsupported, err)
		}
		return &Error{Phase: PhaseAuth, Err: err}
	}
	mech, ir, err := sc.Start()
	if err != nil {
		c.quietQuit()
		return &Error{Phase: PhaseAuth, Err: err}
	}
	c.w.WriteString("AUTH ")
	c.w.WriteString(mech)
	if ir != nil {
		// RFC 4954 §4: an empty initial response is sent as "=".
		c.w.WriteByte(' ')
		if len(ir) == 0 {
			c.w.WriteByte('=')
		} else {
			c.w.WriteString(base64.StdEncoding.EncodeToString(ir))
		}
	}
	c.w.WriteString("\r\n")
	for step := 0; ; step++ {
		if err := c.roundTrip(PhaseAuth, c.t.Command); err != nil {
			return err
		}
		switch {
		case c.rep.code == 235:
			return nil
		case c.rep.code != 334:
			e := c.replyError(PhaseAuth)
			c.quietQuit()
			return e
		case step >= maxAuthSteps:
			return c.cancelAuth(fmt.Errorf("%w: more than %d AUTH challenges", ErrProtocol, maxAuthSteps))
		}
		challenge, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.rep.message()))
		if err != nil {
			return c.cancelAuth(fmt.Errorf("%w: AUTH challenge is not base64", ErrProtocol))
		}
		resp, err := sc.Next(challenge)
		if err != nil {
			return c.cancelAuth(err)
		}
		c.w.WriteString(base64.StdEncoding.EncodeToString(resp))
		c.w.WriteString("\r\n")
	}
}

// cancelAuth ends an exchange the client cannot continue with "*" (RFC
// 4954 §4), then closes the session.
func (c *Client) cancelAuth(cause error) error {
	c.w.WriteString("*\r\n")
	_ = c.roundTrip(PhaseAuth, c.t.Command)
	c.quietQuit()
	c.Close()
	return &Error{Phase: PhaseAuth, Err: cause}
}

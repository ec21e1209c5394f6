package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrNATSNotReady is returned when the embedded server does not become
// ready in time.
var ErrNATSNotReady = errors.New("embedded: nats server not ready")

// NATSOptions configures an embedded NATS server.
type NATSOptions struct {
	// Dir holds JetStream's file storage.
	Dir string
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// HTTPPort serves the monitoring endpoints (/jsz, /varz); 0 disables
	// them, -1 picks a free port.
	HTTPPort int
	// Name of the server, shown in monitoring.
	Name string
}

// StartNATS starts a NATS server with JetStream enabled (message TTLs and
// schedules included) and waits until it accepts clients. The caller shuts
// it down with Shutdown and WaitForShutdown. It returns ErrNATSNotReady if
// the server does not start within ten seconds.
func StartNATS(o NATSOptions) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Name == "" {
		o.Name = "mailwave-embedded"
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.Dir,
		NoSigs:     true,
		NoLog:      true,
		// A dispatch message of a large message plus headers must fit.
		MaxPayload: 8 << 20,
	}
	if o.HTTPPort != 0 {
		opts.HTTPHost = o.Host
		opts.HTTPPort = o.HTTPPort
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: nats server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, ErrNATSNotReady
	}
	return s, nil
}

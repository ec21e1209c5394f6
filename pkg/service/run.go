package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ErrDrainTimeout is returned by Run when the service's work did not stop
// within the drain timeout after shutdown began.
var ErrDrainTimeout = errors.New("service: drain timed out")

// Options adjust Run.
type Options struct {
	// Routes are extra HTTP routes beside /healthz, /readyz and /metrics.
	Routes map[string]http.Handler
	// OnListen, when set, receives the HTTP listener's address.
	OnListen func(net.Addr)
	// OnStart, when set, receives the runtime once the service has set
	// up its work (and registered its metrics), before it serves HTTP.
	OnStart func(*Runtime)
}

// Run opens the runtime, serves HTTP, and runs work until ctx is
// cancelled. work must return once it has drained (stopped taking new
// work and finished or released what it had); Run waits for that at most
// c.DrainTimeout and then returns ErrDrainTimeout.
func Run(ctx context.Context, name string, c Common, opts Options, log *slog.Logger, work func(ctx context.Context, rt *Runtime) (map[string]http.Handler, func(ctx context.Context) error, error)) error {
	rt, err := Open(ctx, name, c, log)
	if err != nil {
		return err
	}
	defer rt.Close()
	routes, loop, err := work(ctx, rt)
	if err != nil {
		return err
	}
	if opts.OnStart != nil {
		opts.OnStart(rt)
	}
	for p, h := range opts.Routes {
		if routes == nil {
			routes = map[string]http.Handler{}
		}
		routes[p] = h
	}
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	httpErr := make(chan error, 1)
	go func() { httpErr <- Serve(httpCtx, c.HTTPAddr, rt.Handler(routes), opts.OnListen) }()

	done := make(chan error, 1)
	go func() { done <- loop(ctx) }()
	log.Info("service started", "service", name)
	select {
	case err := <-done:
		stopHTTP()
		<-httpErr
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	case err := <-httpErr:
		return err
	case <-ctx.Done():
	}
	log.Info("service draining", "service", name, "timeout", c.DrainTimeout.String())
	timer := time.NewTimer(c.DrainTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		stopHTTP()
		<-httpErr
		log.Info("service stopped", "service", name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("%s: %w", name, ErrDrainTimeout)
	}
}

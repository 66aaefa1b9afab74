package bester

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"time"
)

// Options tune a client; the Dial options set them.
type Options struct {
	TLS         *tls.Config   // for bester+tls:// (default: system roots, ServerName = host)
	KeepAlive   time.Duration // send bester.ping after this much silence (default 60 s; <0: never)
	NoReconnect bool          // fail instead of reconnecting when the connection is lost
	Backoff     time.Duration // first reconnect delay (default 100 ms), doubling…
	MaxBackoff  time.Duration // …up to this (default 10 s)
	PushBuffer  int           // pushes kept while nobody reads Pushes() (default 1024; the oldest go first)
	ManualAck   bool          // stored pushes are acknowledged with Ack, not once received from Pushes()
	MaxSeen     int           // stored pushes' ids remembered to drop a copy that comes again (default 4096)
	Compress    bool          // offer "compress" at every login (WithCompression)
	Dialer      func(ctx context.Context, network, address string) (net.Conn, error)
	Logger      *log.Logger // default: none
}

// Option sets one of the Options.
type Option func(*Options)

// WithTLS sets the TLS configuration for bester+tls:// URLs.
func WithTLS(c *tls.Config) Option { return func(o *Options) { o.TLS = c } }

// WithKeepAlive sets the keep-alive interval (<0: none).
func WithKeepAlive(d time.Duration) Option { return func(o *Options) { o.KeepAlive = d } }

// WithoutReconnect makes a lost connection final.
func WithoutReconnect() Option { return func(o *Options) { o.NoReconnect = true } }

// WithBackoff sets the first and the largest reconnect delay.
func WithBackoff(first, max time.Duration) Option {
	return func(o *Options) { o.Backoff, o.MaxBackoff = first, max }
}

// WithPushBuffer sets how many pushes are kept for Pushes().
func WithPushBuffer(n int) Option { return func(o *Options) { o.PushBuffer = n } }

// WithManualAck leaves the acknowledgement of stored pushes to Ack (for an application that
// must finish the work a push starts before the server may delete it).
func WithManualAck() Option { return func(o *Options) { o.ManualAck = true } }

// WithMaxSeen sets how many stored pushes' ids are remembered to drop a copy that comes again.
func WithMaxSeen(n int) Option { return func(o *Options) { o.MaxSeen = n } }

// WithDialer replaces net.Dialer (for tests, proxies, custom sockets).
func WithDialer(d func(ctx context.Context, network, address string) (net.Conn, error)) Option {
	return func(o *Options) { o.Dialer = d }
}

// WithLogger logs reconnects and dropped pushes there.
func WithLogger(l *log.Logger) Option { return func(o *Options) { o.Logger = l } }

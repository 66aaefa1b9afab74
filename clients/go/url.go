package bester

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is the port of a URL that names none.
const DefaultPort = "2222"

// URL is a parsed bester://, bester+tls://, bester+ws:// or bester+wss:// URL.
type URL struct {
	Scheme   string // "bester", "bester+tls", "bester+ws" or "bester+wss"
	Host     string // host:port
	Username string // from the URL's user info, if any
	Password string
	// HasPassword tells an empty password from none.
	HasPassword bool
}

// TLS reports whether the URL's transport is encrypted.
func (u *URL) TLS() bool { return u.Scheme == "bester+tls" || u.Scheme == "bester+wss" }

// WebSocket reports whether the URL's transport is WebSocket (one message per frame body).
func (u *URL) WebSocket() bool { return u.Scheme == "bester+ws" || u.Scheme == "bester+wss" }

// String gives the URL without its password.
func (u *URL) String() string {
	if u.Username != "" {
		return u.Scheme + "://" + url.User(u.Username).String() + "@" + u.Host
	}
	return u.Scheme + "://" + u.Host
}

// ParseURL reads bester://[user[:password]@]host[:port] (or bester+tls://, bester+ws://,
// bester+wss://); user and password may be percent-encoded.
func ParseURL(text string) (*URL, error) {
	scheme, rest, ok := strings.Cut(text, "://")
	switch scheme {
	case "bester", "bester+tls", "bester+ws", "bester+wss":
	default:
		ok = false
	}
	if !ok {
		return nil, fmt.Errorf("%q is not a bester://, bester+tls://, bester+ws:// or bester+wss:// URL", text)
	}
	u := &URL{Scheme: scheme}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		info := rest[:at]
		rest = rest[at+1:]
		user, pass, has := strings.Cut(info, ":")
		var err error
		if u.Username, err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("bad %%-escape in the URL's user")
		}
		if has {
			if u.Password, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("bad %%-escape in the URL's password")
			}
			u.HasPassword = true
		}
	}
	rest = strings.TrimRight(rest, "/")
	if rest == "" || strings.ContainsAny(rest, "/?#") {
		return nil, fmt.Errorf("%q: the URL needs host:port and nothing after it", text)
	}
	if _, _, err := net.SplitHostPort(rest); err != nil {
		rest = net.JoinHostPort(strings.Trim(rest, "[]"), DefaultPort)
	}
	u.Host = rest
	return u, nil
}

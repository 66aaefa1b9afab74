// Package scan is the fast lane of the library's frame reading: a strict, allocation-free JSON
// cursor that the client (for replies and pushes) and the handler (for requests) use to find the
// few envelope fields they need and the byte span of `data` in one pass.
//
// It is never a second judge. The envelope walkers built on it answer either "read" (with the
// same values encoding/json would give) or "ask the full path", and the caller then decodes the
// frame with encoding/json exactly as before, so every error, every oddity (a repeated key, a
// key in other letter case, a null where a string is expected, an escape in an envelope string)
// behaves as it always did. What the cursor accepts it validates as encoding/json does: RFC 8259
// syntax (no trailing commas, no leading zeros, no control characters in strings, only the
// defined escapes), nesting of at most MaxDepth levels (deeper is left to the full path), and
// nothing after the top-level value. The input must already be valid UTF-8 (both callers check
// that first, as they did before the fast lane). Tests compare it with encoding/json on the
// protocol vectors, on generated frames and, as a fuzz target, on arbitrary bytes.
package scan

import "unicode/utf8"

// MaxDepth is the nesting the cursor follows; deeper values are left to the full path.
const MaxDepth = 512

// Cursor walks a JSON text. Methods that return ok=false leave the cursor anywhere: the caller
// gives up on the fast lane.
type Cursor struct {
	B   []byte
	Pos int
	// Spaces counts the whitespace bytes skipped so far (a value read with none in it is in
	// the compact form encoding/json would write).
	Spaces int
}

// Peek skips whitespace and returns the next byte (0 at the end).
func (c *Cursor) Peek() byte {
	for c.Pos < len(c.B) {
		switch c.B[c.Pos] {
		case ' ', '\t', '\n', '\r':
			c.Pos++
			c.Spaces++
		default:
			return c.B[c.Pos]
		}
	}
	return 0
}

// Eat consumes b (after whitespace).
func (c *Cursor) Eat(b byte) bool {
	if c.Peek() != b {
		return false
	}
	c.Pos++
	return true
}

// More reads what follows a member or an element: true for a comma, false for end.
func (c *Cursor) More(end byte) (more, ok bool) {
	switch c.Peek() {
	case ',':
		c.Pos++
		return true, true
	case end:
		c.Pos++
		return false, true
	}
	return false, false
}

// End reports whether only whitespace is left.
func (c *Cursor) End() bool { return c.Peek() == 0 && c.Pos == len(c.B) }

// Plain reads a string without escapes (after whitespace) and returns its contents, which
// are then its decoded value.
func (c *Cursor) Plain() ([]byte, bool) {
	if c.Peek() != '"' {
		return nil, false
	}
	start := c.Pos + 1
	for i := start; i < len(c.B); i++ {
		switch b := c.B[i]; {
		case b == '"':
			c.Pos = i + 1
			return c.B[start:i], true
		case b == '\\' || b < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// Key reads an object key without escapes and the colon after it.
func (c *Cursor) Key() ([]byte, bool) {
	k, ok := c.Plain()
	if !ok || !c.Eat(':') {
		return nil, false
	}
	return k, true
}

// Value reads any JSON value (after whitespace) and returns its span.
func (c *Cursor) Value() (start, end int, ok bool) {
	c.Peek()
	start = c.Pos
	if !c.value(0) {
		return 0, 0, false
	}
	return start, c.Pos, true
}

func (c *Cursor) value(depth int) bool {
	switch c.Peek() {
	case '"':
		return c.str()
	case '{':
		return c.object(depth + 1)
	case '[':
		return c.array(depth + 1)
	case 't':
		return c.literal("true")
	case 'f':
		return c.literal("false")
	case 'n':
		return c.literal("null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return c.number()
	}
	return false
}

func (c *Cursor) object(depth int) bool {
	if depth > MaxDepth {
		return false
	}
	c.Pos++
	if c.Peek() == '}' {
		c.Pos++
		return true
	}
	for {
		if c.Peek() != '"' || !c.str() || !c.Eat(':') || !c.value(depth) {
			return false
		}
		more, ok := c.More('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

func (c *Cursor) array(depth int) bool {
	if depth > MaxDepth {
		return false
	}
	c.Pos++
	if c.Peek() == ']' {
		c.Pos++
		return true
	}
	for {
		if !c.value(depth) {
			return false
		}
		more, ok := c.More(']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

// str reads a string (the opening quote is next), escapes allowed.
func (c *Cursor) str() bool {
	for i := c.Pos + 1; i < len(c.B); i++ {
		switch b := c.B[i]; {
		case b == '"':
			c.Pos = i + 1
			return true
		case b < 0x20:
			return false
		case b == '\\':
			if i+1 >= len(c.B) {
				return false
			}
			switch c.B[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+5 >= len(c.B) || !isHex(c.B[i+2]) || !isHex(c.B[i+3]) || !isHex(c.B[i+4]) || !isHex(c.B[i+5]) {
					return false
				}
				i += 5
			default:
				return false
			}
		}
	}
	return false
}

func (c *Cursor) digits() int {
	n := 0
	for c.Pos < len(c.B) && '0' <= c.B[c.Pos] && c.B[c.Pos] <= '9' {
		c.Pos++
		n++
	}
	return n
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (c *Cursor) number() bool {
	if c.B[c.Pos] == '-' {
		c.Pos++
	}
	if c.Pos >= len(c.B) {
		return false
	}
	switch b := c.B[c.Pos]; {
	case b == '0':
		c.Pos++
	case '1' <= b && b <= '9':
		c.digits()
	default:
		return false
	}
	if c.Pos < len(c.B) && c.B[c.Pos] == '.' {
		c.Pos++
		if c.digits() == 0 {
			return false
		}
	}
	if c.Pos < len(c.B) && (c.B[c.Pos] == 'e' || c.B[c.Pos] == 'E') {
		c.Pos++
		if c.Pos < len(c.B) && (c.B[c.Pos] == '+' || c.B[c.Pos] == '-') {
			c.Pos++
		}
		if c.digits() == 0 {
			return false
		}
	}
	return true
}

func (c *Cursor) literal(word string) bool {
	if len(c.B)-c.Pos < len(word) || string(c.B[c.Pos:c.Pos+len(word)]) != word {
		return false
	}
	c.Pos += len(word)
	return true
}

// Folds reports whether encoding/json could match key to a field named one of names without
// it being exactly that name: it matches keys case-insensitively (with Unicode folding for
// non-ASCII), so an unknown key is safe to skip only if it is ASCII and folds to none of them.
func Folds(key []byte, names ...string) bool {
	for _, b := range key {
		if b >= 0x80 {
			return true
		}
	}
	for _, n := range names {
		if len(n) == len(key) && equalFoldASCII(key, n) {
			return true
		}
	}
	return false
}

func equalFoldASCII(a []byte, b string) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// From is header.from as the walkers read it (bester.From's fields).
type From struct {
	User, Server, Handler, Address, Listener, Transport string
	Info                                                []byte
}

var fromNames = []string{"user", "server", "handler", "info", "address", "listener", "transport"}

// ReadFrom reads a header.from object (after whitespace) whose fields are strings without
// escapes (info: any value but null), each at most once; anything else is not ok.
func (c *Cursor) ReadFrom(f *From) bool {
	if !c.Eat('{') {
		return false
	}
	if c.Peek() == '}' {
		c.Pos++
		return true
	}
	var seen uint8
	for {
		k, ok := c.Key()
		if !ok {
			return false
		}
		var dst *string
		bit := uint8(0)
		switch string(k) {
		case "user":
			dst, bit = &f.User, 1
		case "server":
			dst, bit = &f.Server, 2
		case "handler":
			dst, bit = &f.Handler, 4
		case "address":
			dst, bit = &f.Address, 8
		case "listener":
			dst, bit = &f.Listener, 16
		case "transport":
			dst, bit = &f.Transport, 32
		case "info":
			bit = 64
		default:
			if Folds(k, fromNames...) {
				return false
			}
			if _, _, ok := c.Value(); !ok {
				return false
			}
		}
		if bit != 0 {
			if seen&bit != 0 {
				return false
			}
			seen |= bit
			if dst != nil {
				v, ok := c.Plain()
				if !ok {
					return false
				}
				*dst = string(v)
			} else {
				if c.Peek() == 'n' {
					return false
				}
				s, e, ok := c.Value()
				if !ok {
					return false
				}
				f.Info = c.B[s:e]
			}
		}
		more, ok := c.More('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// Members walks an object (after whitespace), calling member for each key with the cursor
// then at its value; member reads that value or returns false.
func (c *Cursor) Members(member func(key []byte) bool) bool {
	if !c.Eat('{') {
		return false
	}
	if c.Peek() == '}' {
		c.Pos++
		return true
	}
	for {
		k, ok := c.Key()
		if !ok || !member(k) {
			return false
		}
		more, ok := c.More('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// Strings reads an array of strings without escapes (after whitespace).
func (c *Cursor) Strings(dst *[]string) bool {
	if !c.Eat('[') {
		return false
	}
	*dst = []string{}
	if c.Peek() == ']' {
		c.Pos++
		return true
	}
	for {
		v, ok := c.Plain()
		if !ok {
			return false
		}
		*dst = append(*dst, string(v))
		more, ok := c.More(']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// SkipUnknown skips the value of a key that is none of names, unless encoding/json would
// match it to one of them after all (other letter case): then it is not ok.
func (c *Cursor) SkipUnknown(key []byte, names []string) bool {
	if Folds(key, names...) {
		return false
	}
	_, _, ok := c.Value()
	return ok
}

// Writable reports whether s can be written between quotes as it is, byte for byte what
// encoding/json writes for it: valid UTF-8, no quote, backslash or control character, and no
// U+2028 or U+2029 (which encoding/json escapes).
func Writable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20 || b == '"' || b == '\\':
			return false
		case b == 0xE2 && i+2 < len(s) && s[i+1] == 0x80 && s[i+2]&^1 == 0xA8:
			return false
		}
	}
	return true
}

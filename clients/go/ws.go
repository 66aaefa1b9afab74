package bester

// WebSocket (RFC 6455) for bester+ws:// and bester+wss://: one message is one frame body
// without its length prefix (PROTOCOL.md §1.1). wsConn turns that into the same byte stream
// of length-prefixed frames as TCP, so the client reads and writes frames the same way on
// every transport.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

type wsConn struct {
	net.Conn
	r   *bufio.Reader
	wmu sync.Mutex
	max int
	in  []byte // length-prefixed frames not yet read
	out []byte // bytes written that do not yet make a whole frame
}

// wsUpgrade runs the opening handshake on c (already TLS for wss).
func wsUpgrade(c net.Conn, host string, max int) (net.Conn, error) {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	var head strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("WebSocket handshake: %w", err)
		}
		if head.Len()+len(line) > 8192 {
			return nil, errors.New("WebSocket handshake: the answer's head is over 8 KiB")
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	lines := strings.Split(head.String(), "\r\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.1 101") {
		return nil, fmt.Errorf("WebSocket handshake refused: %s", lines[0])
	}
	sum := sha1.Sum([]byte(k + wsGUID))
	want := base64.StdEncoding.EncodeToString(sum[:])
	ok := false
	for _, l := range lines[1:] {
		name, value, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Sec-WebSocket-Accept") && strings.TrimSpace(value) == want {
			ok = true
		}
	}
	if !ok {
		return nil, errors.New("WebSocket handshake: wrong or missing Sec-WebSocket-Accept")
	}
	return &wsConn{Conn: c, r: r, max: max}, nil
}

// send writes one masked frame.
func (w *wsConn) send(opcode byte, payload []byte) error {
	head := make([]byte, 0, 14)
	head = append(head, 0x80|opcode)
	n := len(payload)
	switch {
	case n < 126:
		head = append(head, 0x80|byte(n))
	case n < 1<<16:
		head = append(head, 0x80|126, byte(n>>8), byte(n))
	default:
		head = append(head, 0x80|127)
		head = binary.BigEndian.AppendUint64(head, uint64(n))
	}
	var mask [4]byte
	if _, err := rand.Read(mask[:]); err != nil {
		return err
	}
	head = append(head, mask[:]...)
	buf := make([]byte, len(head)+n)
	copy(buf, head)
	for i, b := range payload {
		buf[len(head)+i] = b ^ mask[i&3]
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.Conn.Write(buf)
	return err
}

// Write takes length-prefixed frames and sends each body as one text message.
func (w *wsConn) Write(p []byte) (int, error) {
	w.out = append(w.out, p...)
	for len(w.out) >= 4 {
		n := int(binary.LittleEndian.Uint32(w.out))
		if len(w.out) < 4+n {
			break
		}
		if err := w.send(1, w.out[4:4+n]); err != nil {
			return 0, err
		}
		w.out = w.out[4+n:]
	}
	if len(w.out) == 0 {
		w.out = nil
	}
	return len(p), nil
}

// Read gives the messages received as length-prefixed frames.
func (w *wsConn) Read(p []byte) (int, error) {
	for len(w.in) == 0 {
		msg, err := w.message()
		if err != nil {
			return 0, err
		}
		w.in = binary.LittleEndian.AppendUint32(w.in[:0], uint32(len(msg)))
		w.in = append(w.in, msg...)
	}
	n := copy(p, w.in)
	w.in = w.in[n:]
	return n, nil
}

// message reads one whole data message (fragments reassembled, pings answered), at most max
// bytes: over it, frame_too_large.
func (w *wsConn) message() ([]byte, error) {
	var msg []byte
	started := false
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.r, h[:]); err != nil {
			return nil, err
		}
		fin, opcode := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.r, b[:]); err != nil {
				return nil, io.ErrUnexpectedEOF
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.r, b[:]); err != nil {
				return nil, io.ErrUnexpectedEOF
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		var mask []byte
		if h[1]&0x80 != 0 {
			mask = make([]byte, 4)
			if _, err := io.ReadFull(w.r, mask); err != nil {
				return nil, io.ErrUnexpectedEOF
			}
		}
		control := opcode&0x08 != 0
		if control && (n > 125 || !fin) {
			return nil, &Error{Code: CodeProtocolError, Text: "a WebSocket control frame over 125 bytes or fragmented"}
		}
		if !control && n > uint64(w.max-len(msg)) {
			return nil, &Error{Code: CodeFrameTooLarge, Text: fmt.Sprintf("a WebSocket message over the limit of %d bytes", w.max)}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.r, payload); err != nil {
			return nil, io.ErrUnexpectedEOF
		}
		if mask != nil {
			for i := range payload {
				payload[i] ^= mask[i&3]
			}
		}
		switch {
		case opcode == 8: // close: the JSON error frame, if any, came before
			_ = w.send(8, payload[:min(len(payload), 2)])
			return nil, io.EOF
		case opcode == 9:
			if err := w.send(10, payload); err != nil {
				return nil, err
			}
			continue
		case opcode == 10:
			continue
		case opcode == 1 || opcode == 2:
			if started {
				return nil, &Error{Code: CodeProtocolError, Text: "a WebSocket message inside another"}
			}
			started = true
		case opcode == 0:
			if !started {
				return nil, &Error{Code: CodeProtocolError, Text: "a stray WebSocket continuation"}
			}
		default:
			return nil, &Error{Code: CodeProtocolError, Text: fmt.Sprintf("WebSocket opcode %d", opcode)}
		}
		msg = append(msg, payload...)
		if fin {
			if msg == nil {
				msg = []byte{}
			}
			return msg, nil
		}
	}
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

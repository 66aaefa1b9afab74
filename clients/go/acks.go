package bester

// Stored pushes handed to the application once (PROTOCOL.md §4, "Stored delivery"). A push of a
// storing type carries a durable id in header.msg and comes again (at least once) until it is
// acknowledged with bester.ack. seenSet is the client's bookkeeping for that: the ids already
// handed to the application (a bounded set, oldest forgotten first, kept for the client's life
// so that it outlasts reconnections) and the ids whose bester.ack is owed. It does no I/O and
// takes no lock: the client holds c.mu around it and sends the acks.

import (
	"container/list"
	"context"
	"errors"
	"time"
)

const (
	// DefaultMaxSeen is how many stored pushes' ids a client remembers by default.
	DefaultMaxSeen = 4096
	// MaxAck is the most ids one bester.ack may carry (the server's limit).
	MaxAck = 4096
)

// What to do with a push that arrived.
const (
	seenDeliver = iota // the first copy: hand it to the application
	seenAck            // a copy of one handed over and acknowledged: acknowledge it again
	seenDrop           // a copy of one handed over whose ack is still to come
)

type seenSet struct {
	size  int
	ids   map[string]*list.Element // msg -> its element in order (Value: seenID)
	order list.List                // oldest first
	owed  []string                 // ids for the next bester.ack, in order
}

type seenID struct {
	msg   string
	acked bool
}

func newSeenSet(size int) *seenSet {
	if size < 1 {
		size = DefaultMaxSeen
	}
	return &seenSet{size: size, ids: map[string]*list.Element{}}
}

func (s *seenSet) arrived(msg string) int {
	if msg == "" {
		return seenDeliver
	}
	e, ok := s.ids[msg]
	if !ok {
		s.ids[msg] = s.order.PushBack(&seenID{msg: msg})
		if s.order.Len() > s.size {
			old := s.order.Remove(s.order.Front()).(*seenID)
			delete(s.ids, old.msg)
		}
		return seenDeliver
	}
	if e.Value.(*seenID).acked {
		s.owed = append(s.owed, msg)
		return seenAck
	}
	return seenDrop
}

// forget: msg was not handed over after all (dropped from a full buffer); a later copy is.
func (s *seenSet) forget(msg string) {
	if e, ok := s.ids[msg]; ok {
		s.order.Remove(e)
		delete(s.ids, msg)
	}
}

// owe: the application has taken msg; acknowledge it with the next bester.ack.
func (s *seenSet) owe(msg string) {
	if msg != "" {
		s.owed = append(s.owed, msg)
	}
}

// take is the ids for one bester.ack (at most MaxAck), now counted as acknowledged.
func (s *seenSet) take() []string {
	n := min(len(s.owed), MaxAck)
	batch := append([]string(nil), s.owed[:n]...)
	s.owed = s.owed[n:]
	if len(s.owed) == 0 {
		s.owed = nil
	}
	s.acked(batch)
	return batch
}

// acked: a bester.ack for msgs is on its way; a later copy is acknowledged again.
func (s *seenSet) acked(msgs []string) {
	for _, m := range msgs {
		if e, ok := s.ids[m]; ok {
			e.Value.(*seenID).acked = true
		}
	}
}

// Ack sends bester.ack for these stored pushes' ids (Push.Msg): the server deletes them, and
// the count it deleted is returned. With WithManualAck, call it once the work a push started
// is done; a copy that comes again before is not handed over twice.
func (c *Client) Ack(ctx context.Context, msgs ...string) (int, error) {
	c.mu.Lock()
	c.seen.acked(msgs)
	c.mu.Unlock()
	total := 0
	for at := 0; at < len(msgs); at += MaxAck {
		r, err := c.Request(ctx, "bester.ack", map[string][]string{"msgs": msgs[at:min(at+MaxAck, len(msgs))]})
		if err != nil {
			return total, err
		}
		var d struct {
			Acked int `json:"acked"`
		}
		if err := r.Decode(&d); err != nil {
			return total, &Error{Code: CodeProtocolError, Text: "bester.ack answered without acked: " + err.Error()}
		}
		total += d.Acked
	}
	return total, nil
}

// flushAcks sends the acks owed, one bester.ack per MaxAck ids, without waiting for the reply
// (read by a goroutine of its own: a refusal is logged; a lost connection brings the pushes
// again, to be acknowledged again). Without a connection they wait for the next login.
func (c *Client) flushAcks() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.conn != nil && !c.closed && len(c.seen.owed) > 0 {
		msgs := c.seen.take()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err := c.Request(ctx, "bester.ack", map[string][]string{"msgs": msgs})
			var e *Error
			if err != nil && !(errors.As(err, &e) && (e.Code == CodeConnectionLost || e.Code == CodeClosed)) {
				c.logf("bester: bester.ack of %d stored pushes refused: %v", len(msgs), err)
			}
		}()
	}
}

// pump hands the pushes queued by push() to Pushes() one at a time, so that a push counts as
// taken when the application has received it; the acks owed go out whenever the application
// is not waiting for the next push (one bester.ack for what it took meanwhile).
func (c *Client) pump() {
	defer close(c.pushes)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.mu.Unlock()
			select {
			case <-c.queued:
			case <-c.done:
			}
			c.mu.Lock()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		p := c.queue[0] // taken out: the buffer holds PushBuffer more besides
		c.queue[0] = Push{}
		c.queue = c.queue[1:]
		c.mu.Unlock()
		sent := false
		select {
		case c.pushes <- p:
			sent = true
		default:
		}
		if !sent {
			c.flushAcks()
			select {
			case c.pushes <- p:
			case <-c.done:
				return
			}
		}
		c.mu.Lock()
		if p.Msg != "" && !c.opts.ManualAck {
			c.seen.owe(p.Msg)
		}
		idle := len(c.queue) == 0
		c.mu.Unlock()
		if idle {
			c.flushAcks()
		}
	}
}

package bester

import (
	"io"
	"runtime"
	"sync"
)

// BatchWriter lets any number of goroutines write whole frames to one stream: a writer that
// finds another write under way leaves its bytes for that one to write next, so frames sent
// at the same time share a write call. Once a write fails, every later Write returns that
// error (the bytes left for a failed writer are lost with the connection).
type BatchWriter struct {
	W     io.Writer
	mu    sync.Mutex
	buf   []byte
	spare []byte
	busy  bool
	err   error
}

// Write queues p and, unless another goroutine is writing, writes everything queued.
func (b *BatchWriter) Write(p []byte) (int, error) { return b.write(p, true) }

// WriteSolo is Write without the yield that lets other goroutines add their frames first: for
// a writer that knows no other frame is on its way (a single request in flight), to which the
// yield would only cost a trip through the scheduler.
func (b *BatchWriter) WriteSolo(p []byte) (int, error) { return b.write(p, false) }

func (b *BatchWriter) write(p []byte, yield bool) (int, error) {
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.buf = append(b.buf, p...)
	if b.busy {
		b.mu.Unlock()
		return len(p), nil
	}
	b.busy = true
	if yield { // let the goroutines that are ready to write too add their frames first
		b.mu.Unlock()
		runtime.Gosched()
		b.mu.Lock()
	}
	for len(b.buf) > 0 && b.err == nil {
		out := b.buf
		b.buf = b.spare[:0]
		b.mu.Unlock()
		_, err := b.W.Write(out)
		b.mu.Lock()
		b.spare = out[:0]
		if err != nil {
			b.err = err
			b.buf = nil
		}
		if cap(b.spare) > 1<<20 { // do not keep a large buffer after a burst
			b.spare = nil
		}
	}
	b.busy = false
	err := b.err
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

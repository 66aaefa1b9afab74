package bester

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
)

// Frames written at once through Write and WriteSolo from many goroutines all arrive whole,
// each writer's in its order, and a failed write is every later call's error.
func TestBatchWriterKeepsFramesWholeWithAndWithoutTheYield(t *testing.T) {
	var out bytes.Buffer
	b := &BatchWriter{W: &out}
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				body := []byte(fmt.Sprintf("%d:%d", g, i))
				frame := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
				frame = append(frame, body...)
				write := b.Write
				if (g+i)%2 == 0 {
					write = b.WriteSolo
				}
				if n, err := write(frame); n != len(frame) || err != nil {
					t.Errorf("%d, %v", n, err)
				}
			}
		}(g)
	}
	wg.Wait()
	d := Decoder{Max: 64}
	bodies, err := d.Feed(out.Bytes())
	if err != nil || d.Pending() != 0 || len(bodies) != 32*200 {
		t.Fatalf("%d frames, %d bytes left, %v", len(bodies), d.Pending(), err)
	}
	next := map[int]int{}
	for _, body := range bodies {
		var g, i int
		fmt.Sscanf(string(body), "%d:%d", &g, &i)
		if i != next[g] {
			t.Fatalf("writer %d: frame %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	failing := &BatchWriter{W: failWriter{}}
	if _, err := failing.WriteSolo([]byte{1}); err == nil {
		t.Fatal("no error")
	}
	if _, err := failing.Write([]byte{2}); err == nil || err.Error() != "broken" {
		t.Fatalf("later write: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("broken") }

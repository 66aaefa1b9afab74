package bester_test

// go test -run - -bench . : round trips through the Go library on both sides (this client ->
// besterd -> the Go echo example) with 1 and 64 requests in flight. Not part of the tests.

import (
	"context"
	"sync"
	"testing"
	"time"

	"besterd.dev/bester"
	"besterd.dev/bester/internal/broker"
)

func benchWindow(b *testing.B, window int) {
	br := broker.Start(b, "", handlers(), users...)
	c, err := bester.Dial(context.Background(), br.URL(), bester.Auth{Username: "alice", Password: "alice-pw"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := map[string]any{"n": 12345, "text": "a small request of the usual size"}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := (b.N + window - 1) / window
	for w := 0; w < window; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := c.Request(context.Background(), "echo", data); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*window)/time.Since(start).Seconds(), "round_trips/s")
}

func BenchmarkRoundTripWindow1(b *testing.B)  { benchWindow(b, 1) }
func BenchmarkRoundTripWindow64(b *testing.B) { benchWindow(b, 64) }

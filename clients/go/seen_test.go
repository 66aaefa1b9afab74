package bester

import (
	"strconv"
	"testing"
)

func TestSeenSetIsABoundedMemoryOfTheIdsHandedOver(t *testing.T) {
	s := newSeenSet(2)
	if s.arrived("") != seenDeliver {
		t.Fatal("a push without an id is always handed over")
	}
	if s.arrived("1") != seenDeliver || s.arrived("1") != seenDrop {
		t.Fatal("a copy whose ack is still to come is dropped")
	}
	s.owe("1")
	if got := s.take(); len(got) != 1 || got[0] != "1" {
		t.Fatalf("%v", got)
	}
	if s.arrived("1") != seenAck || len(s.take()) != 1 {
		t.Fatal("a copy of one acknowledged is acknowledged again")
	}
	s.arrived("2")
	s.arrived("3")
	if len(s.ids) != 2 || s.arrived("1") != seenDeliver {
		t.Fatal("the oldest id is forgotten")
	}
	s.forget("3")
	if s.arrived("3") != seenDeliver {
		t.Fatal("forgotten: handed over again")
	}
	for i := 0; i < 5000; i++ {
		s.owe(strconv.Itoa(i))
	}
	if n := len(s.take()); n != MaxAck || len(s.owed) != 5000-MaxAck {
		t.Fatalf("%d per bester.ack", n)
	}
}

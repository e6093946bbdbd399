package memlimit

import "testing"

func TestLift(t *testing.T) {
	drain := func() bool {
		select {
		case <-Changed():
			return true
		default:
			return false
		}
	}
	drain()
	if Lifted() {
		t.Fatal("lifted before any Lift")
	}
	a := Lift()
	b := Lift()
	if !Lifted() || !drain() {
		t.Fatal("not lifted, or no change signalled, after Lift")
	}
	a()
	a() // a second release of the same Lift does nothing
	if !Lifted() {
		t.Fatal("one release of two lifts the lift")
	}
	b()
	if Lifted() || !drain() {
		t.Fatal("still lifted, or no change signalled, after every release")
	}
}

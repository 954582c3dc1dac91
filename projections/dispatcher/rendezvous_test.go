package dispatcher_test

import (
	"fmt"
	"testing"

	"github.com/waqueue/waqueue/projections/dispatcher"
)

// Rendezvous hashing spreads connections over the nodes and moves, when a node joins, only the
// connections the new node ranks first (issue 15.2).
func TestRendezvousSpreadsAndMovesLittle(t *testing.T) {
	three := []string{"n1", "n2", "n3"}
	four := append([]string{"n4"}, three...) // order does not matter
	const keys = 30000
	per := map[string]int{}
	moved := 0
	for i := range keys {
		k := fmt.Sprintf("tenant-%d:c%d", i%7, i)
		before, after := dispatcher.Rendezvous(k, three), dispatcher.Rendezvous(k, four)
		if before != dispatcher.Rendezvous(k, []string{"n3", "n1", "n2"}) {
			t.Fatalf("%s: the answer depends on the order of the nodes", k)
		}
		per[after]++
		if before != after {
			moved++
			if after != "n4" {
				t.Fatalf("%s moved from %s to %s when n4 joined", k, before, after)
			}
		}
	}
	for _, n := range four {
		if share := float64(per[n]) / keys; share < 0.22 || share > 0.28 {
			t.Errorf("node %s ranks first for %.3f of the connections, want about 0.25", n, share)
		}
	}
	if share := float64(moved) / keys; share < 0.22 || share > 0.28 {
		t.Errorf("%.3f of the connections moved when a fourth node joined, want about 0.25", share)
	}
	if dispatcher.Rendezvous("x", nil) != "" {
		t.Error("no nodes: want \"\"")
	}
}

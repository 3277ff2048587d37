package engine

import (
	"context"
	"slices"
	"sync"
)

// gate bounds how many nodes are written at once. Waiting high-priority writers (releases: a
// user waits for that node) are let through before waiting low-priority ones, so a release is
// never queued behind a burst of other transitions.
type gate struct {
	mu        sync.Mutex
	free      int
	high, low []chan struct{}
}

func newGate(n int) *gate { return &gate{free: n} }

// acquire waits for a slot; it fails only when ctx ends first.
func (g *gate) acquire(ctx context.Context, high bool) error {
	g.mu.Lock()
	if g.free > 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	if high {
		g.high = append(g.high, ch)
	} else {
		g.low = append(g.low, ch)
	}
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		if i := slices.Index(g.high, ch); i >= 0 {
			g.high = slices.Delete(g.high, i, i+1)
			return ctx.Err()
		}
		if i := slices.Index(g.low, ch); i >= 0 {
			g.low = slices.Delete(g.low, i, i+1)
			return ctx.Err()
		}
		// The slot was handed to us as ctx ended: pass it on.
		g.releaseLocked()
		return ctx.Err()
	}
}

// release frees a slot, handing it to the longest-waiting high-priority writer first.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *gate) releaseLocked() {
	switch {
	case len(g.high) > 0:
		close(g.high[0])
		g.high = g.high[1:]
	case len(g.low) > 0:
		close(g.low[0])
		g.low = g.low[1:]
	default:
		g.free++
	}
}

package engine

import "context"

// gate bounds how many nodes are written at once. The engine has one per write priority (see
// priority): releases (a user waits for that node) and the other writes of nodes on their way to
// a release have slots of their own, so they never wait for a burst of entries or adoptions to
// get one; their requests are also marked urgent and expedited for the client's rate limiter
// (pkg/ratelimit).
type gate chan struct{}

func newGate(n int) gate { return make(gate, n) }

// acquire waits for a slot; it fails only when ctx ends first.
func (g gate) acquire(ctx context.Context) error {
	select {
	case g <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g gate) release() { <-g }

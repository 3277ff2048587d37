package controller

import (
	"time"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

// ledger tracks the controller's node writes between plans (the caller holds Controller.mu):
// which nodes have a write in flight, and when writes returned. A plan is computed from a
// snapshot taken at some point (asOf); an action for a node whose write returned after that
// point is stale (the snapshot predates the write, and the write's return triggers a new plan
// of the node), as is one for a node still being written, and one for a node whose last write
// failed, until its retry time: any plan of the node before then (a node event, a whole-pool
// plan another node's change asked for) would send the failing write again at once.
type ledger struct {
	inflight map[string]plan.ActionType
	// writes counts the writes that returned; written maps a node to the count at its last.
	writes  uint64
	written map[string]uint64
	// retryAt maps a node whose last write failed to when it may be written again.
	retryAt map[string]time.Time
	now     func() time.Time
	// entriesWaiting is set when entries were held back by tainting writes in flight.
	entriesWaiting bool
}

func newLedger() *ledger {
	return &ledger{inflight: map[string]plan.ActionType{}, written: map[string]uint64{}, retryAt: map[string]time.Time{}, now: time.Now}
}

// asOf marks the moment a snapshot is taken.
func (l *ledger) asOf() uint64 { return l.writes }

// claim returns the actions of a plan computed from a snapshot taken at asOf that may be
// handed to writers, and records them as in flight. Stale actions are dropped. Entries are
// also held back while a write that may taint a node (enter, adopt) from an earlier plan is in
// flight: the snapshot cannot show its outcome yet, and maxConcurrent counts it. So are they
// when the plan admitted entries on the slots its releases free (onReleases, from
// Plan.EntriesOnReleases) and one of those releases cannot be handed out (its node is being
// written by an earlier plan, or was since the snapshot): that write may fail, and the entries
// would then exceed maxConcurrent.
func (l *ledger) claim(actions []plan.Action, onReleases int, asOf uint64) []plan.Action {
	now := l.now()
	held := func(node string) bool {
		_, busy := l.inflight[node]
		return busy || l.written[node] > asOf || now.Before(l.retryAt[node])
	}
	hold := l.tainting()
	for _, a := range actions {
		if onReleases > 0 && a.Type == plan.Release && held(a.Node) {
			hold = true
		}
	}
	var out []plan.Action
	for _, a := range actions {
		if held(a.Node) {
			continue
		}
		if a.Type == plan.Enter && hold {
			l.entriesWaiting = true
			continue
		}
		l.inflight[a.Node] = a.Type
		out = append(out, a)
	}
	return out
}

// finish records that the node's write returned. It reports whether the whole pool should be
// re-planned now: entries were held back and no tainting write is in flight any more.
func (l *ledger) finish(node string) bool {
	delete(l.inflight, node)
	delete(l.retryAt, node)
	l.writes++
	l.written[node] = l.writes
	if l.entriesWaiting && !l.tainting() {
		l.entriesWaiting = false
		return true
	}
	return false
}

// failed records, after finish, that the node's write failed: it is not handed out again
// before at.
func (l *ledger) failed(node string, at time.Time) { l.retryAt[node] = at }

// prune forgets writes that every snapshot from asOf on includes, and retry times past.
func (l *ledger) prune(asOf uint64) {
	for node, at := range l.written {
		if at <= asOf {
			delete(l.written, node)
		}
	}
	now := l.now()
	for node, at := range l.retryAt {
		if !now.Before(at) {
			delete(l.retryAt, node)
		}
	}
}

func (l *ledger) tainting() bool {
	for _, t := range l.inflight {
		if t == plan.Enter || t == plan.Adopt {
			return true
		}
	}
	return false
}

package controller

import (
	"errors"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
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
	// failing maps a node whose last write failed to its streak of failed writes.
	failing map[string]streak
	now     func() time.Time
	// entriesWaiting is set when entries were held back by tainting writes in flight.
	entriesWaiting bool
	// taintingReturned is writes at the return of the last entry or adoption.
	taintingReturned uint64
	// uncertain maps a node whose entry or adoption got no answer (engine.UnknownOutcomeError)
	// to that write's guard: the API server may still apply it, so it counts as a tainting write
	// in flight until a version of the node after the guard is seen (settle), a later write of
	// the node succeeds, or unknownOutcomeHold has passed.
	uncertain map[string]guard
}

// guard is the version an unanswered write was based on, and until when it may still land.
type guard struct {
	before string
	until  time.Time
}

// unknownOutcomeHold bounds how long an unanswered write counts as in flight when no later
// version of its node is seen: the API server gives up on a request after a minute by default
// (--request-timeout), and its watch delivers an applied one within seconds.
const unknownOutcomeHold = 2 * time.Minute

// streak is a node's run of failed writes: how many failed in a row, and when the node may be
// written again.
type streak struct {
	failures int
	retryAt  time.Time
}

func newLedger() *ledger {
	return &ledger{inflight: map[string]plan.ActionType{}, written: map[string]uint64{}, failing: map[string]streak{},
		uncertain: map[string]guard{}, now: time.Now}
}

// asOf marks the moment a snapshot is taken.
func (l *ledger) asOf() uint64 { return l.writes }

// claim returns the actions of a plan computed from a snapshot taken at asOf that may be
// handed to writers, and records them as in flight; and how many of the entries handed out
// count on the releases handed out (the plan's onReleases, from Plan.EntriesOnReleases, less
// those held back here). Stale actions are dropped. Entries are also held back while a write
// that may taint a node (enter, adopt) from an earlier plan is in flight: the snapshot cannot
// show its outcome yet, and maxConcurrent counts it. When the plan admitted entries on the
// slots its releases free and some of those releases cannot be handed out (the node is being
// written by an earlier plan, or was since the snapshot, or waits for its retry), one entry
// waits for each, the last ones as the engine leaves them to the next plan for a release that
// fails: that write may fail, or has, and the entries would then exceed maxConcurrent. The
// others go, so that a release that keeps failing holds back no entry with a slot of its own.
// An entry or adoption that returned after asOf holds entries back too: the snapshot predates
// it, so the plan's budget did not count its node, and it is no longer in flight to say so;
// replan then reports that nothing in flight will ask for the whole pool again, and the caller
// must.
func (l *ledger) claim(actions []plan.Action, onReleases int, asOf uint64) (out []plan.Action, entriesOnReleases int, replan bool) {
	now := l.now()
	held := func(node string) bool {
		_, busy := l.inflight[node]
		return busy || l.written[node] > asOf || now.Before(l.failing[node].retryAt)
	}
	// Computed before this plan's own entries are in flight: they go together. The retries of
	// unanswered entries go when the plan enters (or adopts) every node whose write may still
	// land, as after a lost connection, which loses all of its answers at once: the plan's budget
	// then counts each of them, and the guard keeps a write from landing twice. A plan that leaves
	// one out did not count it, and waits like any other.
	inflight, uncertain := l.inflightTainting(), l.uncertainNodes()
	unseen := l.taintingReturned > asOf
	retries := len(uncertain) > 0 && !slices.ContainsFunc(uncertain, func(n string) bool {
		return !slices.ContainsFunc(actions, func(a plan.Action) bool {
			return a.Node == n && (a.Type == plan.Enter || a.Type == plan.Adopt)
		})
	})
	tainting := func(node string) bool {
		return inflight || unseen || (len(uncertain) > 0 && !(retries && slices.Contains(uncertain, node)))
	}
	heldReleases, entries := 0, 0
	for _, a := range actions {
		switch {
		case a.Type == plan.Release && held(a.Node):
			heldReleases++
		case a.Type == plan.Enter:
			entries++
		}
	}
	wait := min(heldReleases, onReleases)
	entry, handed, heldUnseen := 0, 0, false
	for _, a := range actions {
		if a.Type == plan.Enter {
			entry++
		}
		if held(a.Node) {
			continue
		}
		if a.Type == plan.Enter && (tainting(a.Node) || entry > entries-wait) {
			l.entriesWaiting = true
			heldUnseen = heldUnseen || unseen
			continue
		}
		if a.Type == plan.Enter {
			handed++
		}
		l.inflight[a.Node] = a.Type
		out = append(out, a)
	}
	if heldUnseen && !l.inflightTainting() {
		l.entriesWaiting = false
		replan = true
	}
	// At most every entry handed out counts on the releases: the retries of unanswered entries
	// too, when they go together with releases.
	return out, min(handed, onReleases-wait), replan
}

// finish records that the node's write returned, with err. It reports whether the whole pool
// should be re-planned now (entries were held back and no tainting write is in flight any
// more), and, when the write failed, how long until the node may be written again (see
// retryDelay); until then claim holds back every action of the node, so the caller re-plans it
// then. A write that succeeds, or finds the node gone, ends the node's streak of failures; an
// entry left to the next plan (engine.ErrDeferred) was not written, so it waits retryAfterError
// and leaves the streak as it was.
func (l *ledger) finish(node string, err error) (replan bool, retryIn time.Duration) {
	typ := l.inflight[node]
	delete(l.inflight, node)
	l.writes++
	l.written[node] = l.writes
	if typ == plan.Enter || typ == plan.Adopt {
		l.taintingReturned = l.writes
	}
	var unanswered *engine.UnknownOutcomeError
	switch {
	case err == nil:
		delete(l.uncertain, node)
	case (typ == plan.Enter || typ == plan.Adopt) && errors.As(err, &unanswered):
		l.uncertain[node] = guard{before: unanswered.Before, until: l.now().Add(unknownOutcomeHold)}
	}
	if err == nil {
		delete(l.failing, node)
	} else {
		s := l.failing[node]
		retryIn = retryAfterError
		if !errors.Is(err, engine.ErrDeferred) {
			s.failures++
			retryIn = retryDelay(err, s.failures)
		}
		s.retryAt = l.now().Add(retryIn)
		l.failing[node] = s
	}
	return l.entriesResume(), retryIn
}

// entriesResume reports whether entries were held back and nothing tainting is in flight any
// more, and clears entriesWaiting if so.
func (l *ledger) entriesResume() bool {
	if l.entriesWaiting && !l.inflightTainting() && len(l.uncertainNodes()) == 0 {
		l.entriesWaiting = false
		return true
	}
	return false
}

// settle ends the uncertainty of unanswered writes whose node is seen at a later version than
// the write's guard (the write landed, or can no longer: the API server applies it over that
// version only), or is gone from a whole-pool snapshot (full). seen returns a node of the
// snapshot. It reports whether held-back entries may now be planned (entriesResume).
func (l *ledger) settle(seen func(name string) (*corev1.Node, bool), full bool) bool {
	if len(l.uncertain) == 0 {
		return false
	}
	for name, g := range l.uncertain {
		n, ok := seen(name)
		if (!ok && full) || (ok && engine.Newer(n, &corev1.Node{ObjectMeta: metav1.ObjectMeta{ResourceVersion: g.before}})) {
			delete(l.uncertain, name)
		}
	}
	return l.entriesResume()
}

// retryDelay is how long a node waits to be written again after failures writes of it in a row
// failed, the last one with err: retryAfterError, doubled at each further failure, up to
// maxRetryAfterRefusal when the API server refused the write, maxRetryAfterError otherwise.
func retryDelay(err error, failures int) time.Duration {
	limit := maxRetryAfterError
	if refused(err) {
		limit = maxRetryAfterRefusal
	}
	d := retryAfterError
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// refused reports whether the API server answered err by refusing the request itself (a 4xx:
// RBAC, an admission webhook, validation such as annotations too long), which only a change
// someone else makes lets through. No answer, an error of the server's (5xx), throttling (429),
// a timeout (408) and conflicts (409; left after the engine's re-reads) pass by themselves.
func refused(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := int(status.Status().Code)
	return code >= 400 && code < 500 &&
		code != http.StatusRequestTimeout && code != http.StatusConflict && code != http.StatusTooManyRequests
}

// prune forgets writes that every snapshot from asOf on includes, and streaks of failures over:
// those whose retry time is maxRetryAfterRefusal past with no write of the node since (no plan
// wanted to write it; a failure much later says nothing about these).
func (l *ledger) prune(asOf uint64) {
	for node, at := range l.written {
		if at <= asOf {
			delete(l.written, node)
		}
	}
	now := l.now()
	for node, s := range l.failing {
		if !now.Before(s.retryAt.Add(maxRetryAfterRefusal)) {
			delete(l.failing, node)
		}
	}
}

// forget ends the streaks of failures of nodes not present any more (deleted, or out of both
// caches): a node that comes back under the same name is written at once.
func (l *ledger) forget(present func(node string) bool) {
	for node := range l.failing {
		if !present(node) {
			delete(l.failing, node)
		}
	}
}

// backingOff reports whether a write the plan wants is failing: an action for a node whose last
// write failed and whose retry time has not come (the ledger holds the write back), or one that
// failed and has not succeeded since; or a retry of a failed write in flight right now (a webhook
// that times out, an API server that does not answer), which the plan left out as busy.
func (l *ledger) backingOff(actions []plan.Action) bool {
	for node, s := range l.failing {
		if _, busy := l.inflight[node]; busy && s.failures > 0 {
			return true
		}
	}
	now := l.now()
	return slices.ContainsFunc(actions, func(a plan.Action) bool {
		s, failing := l.failing[a.Node]
		return failing && (s.failures > 0 || now.Before(s.retryAt))
	})
}

// inflightTainting reports whether a write that may taint a node (enter, adopt) is in flight.
func (l *ledger) inflightTainting() bool {
	for _, t := range l.inflight {
		if t == plan.Enter || t == plan.Adopt {
			return true
		}
	}
	return false
}

// uncertainNodes returns the nodes whose entry or adoption was left unanswered and may still
// land, forgetting those past unknownOutcomeHold.
func (l *ledger) uncertainNodes() []string {
	now := l.now()
	var out []string
	for name, g := range l.uncertain {
		if !now.Before(g.until) {
			delete(l.uncertain, name)
			continue
		}
		out = append(out, name)
	}
	return out
}

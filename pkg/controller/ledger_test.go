package controller

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/cache"

	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

func act(node string, t plan.ActionType) plan.Action { return plan.Action{Node: node, Type: t} }

func nodesOf(actions []plan.Action) []string {
	var out []string
	for _, a := range actions {
		out = append(out, a.Node)
	}
	return out
}

func TestLedgerStalePlans(t *testing.T) {
	l := newLedger()
	before := l.asOf()
	assert.Equal(t, []string{"a"}, nodesOf(claimed(l, []plan.Action{act("a", plan.Adopt)}, 0, before)))
	assert.Empty(t, claimed(l, []plan.Action{act("a", plan.Release)}, 0, before), "a node being written is not handed out twice")

	assert.False(t, finished(l, "a"))
	assert.Equal(t, []string{"b"}, nodesOf(claimed(l, []plan.Action{act("a", plan.Adopt), act("b", plan.Release)}, 0, before)),
		"a plan from a snapshot taken before a node's write returned is stale for that node only")

	after := l.asOf()
	assert.Equal(t, []string{"a"}, nodesOf(claimed(l, []plan.Action{act("a", plan.Release)}, 0, after)), "a snapshot taken after the write may act")

	finished(l, "a")
	finished(l, "b")
	l.prune(l.asOf())
	assert.Empty(t, l.written, "writes every later snapshot includes are forgotten")
	assert.Empty(t, l.inflight)
}

func TestLedgerEntriesWaitForTaintingWrites(t *testing.T) {
	l := newLedger()
	assert.Len(t, claimed(l, []plan.Action{act("r", plan.Release), act("e1", plan.Enter), act("e2", plan.Enter)}, 0, l.asOf()), 3,
		"the entries of one plan go together; a release in flight holds none back")

	assert.Empty(t, claimed(l, []plan.Action{act("e3", plan.Enter)}, 0, l.asOf()), "entries in flight hold the next plan's back")
	assert.False(t, finished(l, "r"))
	assert.False(t, finished(l, "e1"), "one entry still in flight")
	assert.True(t, finished(l, "e2"), "the last tainting write returned: re-plan the waiting entries now")
	assert.Equal(t, []string{"e3"}, nodesOf(claimed(l, []plan.Action{act("e3", plan.Enter)}, 0, l.asOf())))
	finished(l, "e3")

	assert.Len(t, claimed(l, []plan.Action{act("j", plan.Adopt)}, 0, l.asOf()), 1)
	assert.Empty(t, claimed(l, []plan.Action{act("e4", plan.Enter)}, 0, l.asOf()), "an adoption in flight holds entries back too")
	assert.True(t, finished(l, "j"))
	assert.False(t, finished(l, "x"), "nothing was waiting")
}

// An entry or adoption that returns between a snapshot and the claim of the plan computed from
// it is in neither: the snapshot predates its node's new phase, so the plan's budget did not
// count it, and it is no longer in flight. The plan's entries wait and the caller re-plans the
// whole pool; its other actions go.
func TestLedgerEntryReturnedAfterTheSnapshotHoldsEntries(t *testing.T) {
	for _, typ := range []plan.ActionType{plan.Enter, plan.Adopt} {
		t.Run(string(typ), func(t *testing.T) {
			l := newLedger()
			_, _, replan := l.claim([]plan.Action{act("b", typ)}, 0, l.asOf())
			assert.False(t, replan)
			asOf := l.asOf() // the next plan's snapshot: b's write still in flight
			assert.False(t, finished(l, "b"), "nothing was waiting")
			got, onReleases, replan := l.claim([]plan.Action{act("r", plan.Release), act("a", plan.Enter)}, 1, asOf)
			assert.Equal(t, []string{"r"}, nodesOf(got), "the entry waits; the release goes")
			assert.Zero(t, onReleases)
			assert.True(t, replan, "nothing in flight will ask for the plan again")
			assert.False(t, finished(l, "r"), "the re-plan was asked for once, by the claim")

			got, _, replan = l.claim([]plan.Action{act("a", plan.Enter)}, 0, l.asOf())
			assert.Equal(t, []string{"a"}, nodesOf(got), "a snapshot taken after b's write counts it")
			assert.False(t, replan)
		})
	}
	// With an unanswered entry's retry held back by it too, the claim re-plans all the same.
	l := newLedger()
	l.claim([]plan.Action{act("u", plan.Enter), act("b", plan.Adopt)}, 0, l.asOf())
	_, _ = l.finish("u", &engine.UnknownOutcomeError{Before: "1", Err: errors.New("no answer")})
	asOf := l.asOf()
	finished(l, "b")
	l.failing = map[string]streak{} // u's retry is due
	got, _, replan := l.claim([]plan.Action{act("u", plan.Enter)}, 0, asOf)
	assert.Empty(t, got)
	assert.True(t, replan, "nothing else re-plans until u's guard settles or its hold ends")

	// A release that returned after the snapshot holds nothing back.
	l = newLedger()
	l.claim([]plan.Action{act("r", plan.Release)}, 0, l.asOf())
	asOf = l.asOf()
	finished(l, "r")
	got, _, replan = l.claim([]plan.Action{act("a", plan.Enter)}, 0, asOf)
	assert.Equal(t, []string{"a"}, nodesOf(got))
	assert.False(t, replan)
	// With a tainting write still in flight, its return re-plans: the claim does not.
	l = newLedger()
	l.claim([]plan.Action{act("b", plan.Enter), act("c", plan.Enter)}, 0, l.asOf())
	asOf = l.asOf()
	finished(l, "b")
	got, _, replan = l.claim([]plan.Action{act("a", plan.Enter)}, 0, asOf)
	assert.Empty(t, got)
	assert.False(t, replan)
	assert.True(t, finished(l, "c"))
}

// An entry or adoption that got no answer may still be applied by the API server: it holds
// entries back like one in flight until its node is seen at a version after its guard, a later
// write of the node succeeds, or unknownOutcomeHold has passed. An unanswered release does not.
func TestLedgerUnansweredEntryHoldsEntries(t *testing.T) {
	now := time.Now()
	l := newLedger()
	l.now = func() time.Time { return now }
	lost := &engine.UnknownOutcomeError{Before: "5", Err: errors.New("http2: client connection lost")}
	at := func(rv string) func(string) (*corev1.Node, bool) {
		return func(name string) (*corev1.Node, bool) {
			if name != "a" {
				return nil, false
			}
			return nodeAt(rv), true
		}
	}

	require.Len(t, claimed(l, []plan.Action{act("a", plan.Enter)}, 0, l.asOf()), 1)
	replan, _ := l.finish("a", fmt.Errorf("patching node a (enter): %w", lost))
	assert.False(t, replan)
	assert.Empty(t, claimed(l, []plan.Action{act("b", plan.Enter)}, 0, l.asOf()), "a's entry may still land")
	assert.False(t, l.settle(at("5"), true), "a seen at the version the entry was based on: it may still land")
	assert.Empty(t, claimed(l, []plan.Action{act("b", plan.Enter)}, 0, l.asOf()))
	assert.False(t, l.settle(func(string) (*corev1.Node, bool) { return nil, false }, false), "a not in a snapshot of other nodes")
	assert.True(t, l.settle(at("6"), false), "a seen at a later version: settled, and b was waiting")
	assert.Equal(t, []string{"b"}, nodesOf(claimed(l, []plan.Action{act("b", plan.Enter)}, 0, l.asOf())))
	finished(l, "b")

	now = now.Add(time.Minute) // a's retry time is long past
	require.Len(t, claimed(l, []plan.Action{act("a", plan.Adopt)}, 0, l.asOf()), 1)
	l.finish("a", lost)
	assert.Empty(t, claimed(l, []plan.Action{act("c", plan.Enter)}, 0, l.asOf()), "an unanswered adoption holds entries back too")
	assert.True(t, l.settle(func(string) (*corev1.Node, bool) { return nil, false }, true), "a gone from the pool: settled")

	require.Len(t, claimed(l, []plan.Action{act("d", plan.Enter)}, 0, l.asOf()), 1)
	l.finish("d", lost)
	now = now.Add(time.Minute)
	require.Len(t, claimed(l, []plan.Action{act("d", plan.Enter)}, 0, l.asOf()), 1, "d's retry")
	finished(l, "d")
	assert.Len(t, claimed(l, []plan.Action{act("x", plan.Enter)}, 0, l.asOf()), 1, "the retry succeeded: d's entry is settled")
	finished(l, "x")

	require.Len(t, claimed(l, []plan.Action{act("e", plan.Enter)}, 0, l.asOf()), 1)
	l.finish("e", lost)
	now = now.Add(unknownOutcomeHold)
	assert.Len(t, claimed(l, []plan.Action{act("f", plan.Enter)}, 0, l.asOf()), 1, "held unknownOutcomeHold at most")
	finished(l, "f")

	// A lost connection loses every answer at once: each retry goes, other entries wait.
	require.Len(t, claimed(l, []plan.Action{act("h", plan.Enter), act("i", plan.Enter)}, 0, l.asOf()), 2)
	l.finish("h", lost)
	l.finish("i", lost)
	now = now.Add(time.Minute)
	assert.Equal(t, []string{"h", "i"}, nodesOf(claimed(l, []plan.Action{act("h", plan.Enter), act("i", plan.Enter), act("j", plan.Enter)}, 0, l.asOf())),
		"the retries of both unanswered entries go; j waits")
	finished(l, "h")
	assert.True(t, finished(l, "i"), "both retries succeeded: j was waiting")

	// A plan that retries one of them only did not count the other in its budget: it waits.
	require.Len(t, claimed(l, []plan.Action{act("h", plan.Enter), act("i", plan.Enter)}, 0, l.asOf()), 2)
	l.finish("h", lost)
	l.finish("i", lost)
	now = now.Add(time.Minute)
	assert.Equal(t, []string{"k"}, nodesOf(claimed(l, []plan.Action{act("k", plan.Adopt), act("h", plan.Enter)}, 0, l.asOf())),
		"i's entry may still land: h's retry waits")
	finished(l, "k")
	now = now.Add(unknownOutcomeHold)

	require.Len(t, claimed(l, []plan.Action{act("r", plan.Release)}, 0, l.asOf()), 1)
	l.finish("r", lost)
	assert.Len(t, claimed(l, []plan.Action{act("g", plan.Enter)}, 0, l.asOf()), 1, "an unanswered release holds no entry back")
}

// A plan that admitted an entry on the slot of a release it cannot hand out (an earlier plan is
// still writing that node) holds the entry back until that write returns: it may fail.
func TestLedgerEntriesWaitForTheReleasesTheyCountOn(t *testing.T) {
	l := newLedger()
	require.Len(t, claimed(l, []plan.Action{act("m", plan.Release)}, 0, l.asOf()), 1)
	assert.Empty(t, claimed(l, []plan.Action{act("m", plan.Release), act("n", plan.Enter)}, 1, l.asOf()),
		"n's slot is m's, whose release is still being written")
	assert.Equal(t, []string{"o"}, nodesOf(claimed(l, []plan.Action{act("m", plan.Release), act("o", plan.Enter)}, 0, l.asOf())),
		"an entry with room of its own does not wait")
	assert.True(t, finished(l, "o"), "o's entry returned: re-plan (the waiting entry)")
	assert.Empty(t, claimed(l, []plan.Action{act("m", plan.Release), act("n", plan.Enter)}, 1, l.asOf()), "m is still being written")
	assert.True(t, finished(l, "m"), "m's release returned: re-plan the waiting entry now")
	assert.Equal(t, []string{"n"}, nodesOf(claimed(l, []plan.Action{act("n", plan.Enter)}, 0, l.asOf())))
}

// The retries of unanswered entries that go with releases count on them like any other entry:
// if a release fails, the engine leaves the last entries to the next plan, so that the retries
// cannot take maxConcurrent one past.
func TestLedgerRetriedEntriesCountOnReleases(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLedger()
	l.now = func() time.Time { return now }
	lost := &engine.UnknownOutcomeError{Before: "5", Err: errors.New("http2: client connection lost")}
	require.Len(t, claimed(l, []plan.Action{act("h", plan.Enter), act("i", plan.Enter)}, 0, l.asOf()), 2)
	l.finish("h", lost)
	l.finish("i", lost)
	now = now.Add(time.Minute)

	got, onReleases, _ := l.claim([]plan.Action{act("r", plan.Release), act("h", plan.Enter), act("i", plan.Enter)}, 1, l.asOf())
	assert.Equal(t, []string{"r", "h", "i"}, nodesOf(got))
	assert.Equal(t, 1, onReleases, "i's retry counts on r's release")
	finished(l, "r")
	finished(l, "h")
	finished(l, "i")

	got, onReleases, _ = l.claim([]plan.Action{act("s", plan.Release), act("j", plan.Enter)}, 3, l.asOf())
	assert.Equal(t, []string{"s", "j"}, nodesOf(got))
	assert.Equal(t, 1, onReleases, "no more than the entries handed out")
}

func nodeAt(rv string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: rv}}
}

func TestOverlayAhead(t *testing.T) {
	w := engine.Written{Before: "10", Node: nodeAt("12")}
	assert.True(t, ahead(w, nodeAt("10")), "cache still at the guarded version")
	assert.True(t, ahead(w, nodeAt("11")), "cache at a version between (our patch was retried after a conflict)")
	assert.False(t, ahead(w, nodeAt("12")), "cache delivered our write")
	assert.False(t, ahead(w, nodeAt("13")), "cache moved past it")

	opaque := engine.Written{Before: "x1", Node: nodeAt("x2")}
	assert.True(t, ahead(opaque, nodeAt("x1")), "not comparable: ahead while the cache holds the guarded version")
	assert.False(t, ahead(opaque, nodeAt("x3")))

	assert.True(t, engine.Newer(nodeAt("100"), nodeAt("99")))
	assert.False(t, engine.Newer(nodeAt("99"), nodeAt("100")))
	assert.False(t, engine.Newer(nodeAt("x"), nodeAt("1")), "not comparable is not newer")
}

// A node whose write failed is not written again before its retry time, whatever plans it in
// the meantime (a node event, a whole-pool plan another node asked for): the retry timer re-plans
// it then. A release held back so holds back an entry admitted on the slot it frees.
func TestLedgerFailedWriteWaitsForItsRetry(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLedger()
	l.now = func() time.Time { return now }

	require.Len(t, claimed(l, []plan.Action{act("a", plan.Enter)}, 0, l.asOf()), 1)
	_, retryIn := l.finish("a", errRefused)
	require.Equal(t, time.Second, retryIn)
	assert.Empty(t, claimed(l, []plan.Action{act("a", plan.Enter)}, 0, l.asOf()), "planned again after the failure, before its retry time")

	require.Len(t, claimed(l, []plan.Action{act("r", plan.Release)}, 0, l.asOf()), 1)
	l.finish("r", errRefused)
	assert.Empty(t, claimed(l, []plan.Action{act("r", plan.Release), act("e", plan.Enter)}, 1, l.asOf()),
		"the entry counts on r's release, which waits")
	assert.Equal(t, []string{"e"}, nodesOf(claimed(l, []plan.Action{act("r", plan.Release), act("e", plan.Enter)}, 0, l.asOf())),
		"an entry that does not count on it goes")
	finished(l, "e")

	now = now.Add(time.Second)
	l.prune(l.asOf())
	assert.Equal(t, []string{"a", "r"}, nodesOf(claimed(l, []plan.Action{act("a", plan.Enter), act("r", plan.Release)}, 0, l.asOf())),
		"at the retry time")
	l.finish("a", errRefused)
	finished(l, "a") // a later write of the node returned
	assert.NotContains(t, l.failing, "a", "a write that returns clears the node's retry time")
}

var (
	errRefused = apierrors.NewInvalid(schema.GroupKind{Kind: "Node"}, "a",
		field.ErrorList{field.TooLong(field.NewPath("metadata", "annotations"), "", 262144)})
	errUnavailable = apierrors.NewServiceUnavailable("etcd leader changed")
)

// A node whose writes keep failing waits twice as long after each failure, from a second (a
// transient error still recovers fast) up to a cap: 5 minutes when the API server refused the
// write (here the probe's 422, annotations too long), 30 s for an error that passes by itself
// (no answer, 5xx, 429). The node is held back exactly that long, and re-plans before then send
// nothing. Other nodes are written meanwhile, each with a streak of its own; a successful write
// ends the streak, as does the node leaving the caches, and the next failure waits a second again.
func TestLedgerRetryBacksOff(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLedger()
	l.now = func() time.Time { return now }
	// fail hands node's action out (at its retry time, not before) and has it fail with err.
	fail := func(node string, err error) time.Duration {
		t.Helper()
		require.Equal(t, []string{node}, nodesOf(claimed(l, []plan.Action{act(node, plan.Enter)}, 0, l.asOf())), "%s is written at its retry time", node)
		_, retryIn := l.finish(node, err)
		return retryIn
	}
	// wait advances the clock by d, re-planning node just before: it is held until then.
	wait := func(node string, d time.Duration) {
		t.Helper()
		now = now.Add(d - time.Millisecond)
		l.prune(l.asOf())
		assert.Empty(t, claimed(l, []plan.Action{act(node, plan.Enter)}, 0, l.asOf()), "%s is held until its retry time", node)
		now = now.Add(time.Millisecond)
	}

	var refused []time.Duration
	for range 12 {
		d := fail("a", errRefused)
		refused = append(refused, d)
		assert.Equal(t, time.Second, fail("b", errUnavailable), "another node's failures do not lengthen a's wait, nor a's b's")
		finished(l, "b")
		wait("a", d)
	}
	assert.Equal(t, []time.Duration{
		1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
		64 * time.Second, 128 * time.Second, 256 * time.Second, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute,
	}, refused)

	finished(l, "a")
	assert.Equal(t, time.Second, fail("a", errRefused), "a successful write ends the streak")

	var transient []time.Duration
	for range 7 {
		d := fail("c", errUnavailable)
		transient = append(transient, d)
		wait("c", d)
	}
	assert.Equal(t, []time.Duration{
		1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second,
	}, transient)
	assert.Equal(t, 30*time.Second, fail("c", errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")),
		"no answer at all passes by itself too")
	wait("c", 30*time.Second)
	assert.Equal(t, 256*time.Second, fail("c", fmt.Errorf("patching node c (release): still conflicting after 5 re-reads: %w", errRefused)),
		"the ninth failure in a row, a refusal (wrapped): past the 30 s cap, up to the longer one")

	l.forget(func(node string) bool { return node != "c" })
	assert.NotContains(t, l.failing, "c", "a node gone from the caches is forgotten")
	assert.Equal(t, time.Second, fail("c", errRefused), "and starts afresh if it comes back")

	_, retryIn := l.finish("d", engine.ErrDeferred)
	assert.Equal(t, time.Second, retryIn, "an entry left to the next plan was not written: no failure of its own")
	assert.Zero(t, l.failing["d"].failures)

	now = now.Add(time.Second + maxRetryAfterRefusal)
	l.prune(l.asOf())
	assert.Empty(t, l.failing, "a streak is over once its retry time is maxRetryAfterRefusal past with no write of the node")
}

// The classes of errors that set the cap: refusals wait up to 5 minutes, the rest up to 30 s.
func TestRefused(t *testing.T) {
	gr := schema.GroupResource{Resource: "nodes"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errRefused, true},
		{apierrors.NewForbidden(gr, "a", errors.New("denied")), true},
		{apierrors.NewBadRequest("admission webhook denied the request"), true},
		{apierrors.NewConflict(gr, "a", errors.New("modified")), false},
		{apierrors.NewTooManyRequests("throttled", 1), false},
		{apierrors.NewInternalError(errors.New("etcd timeout")), false},
		{apierrors.NewTimeoutError("timeout", 1), false},
		{errUnavailable, false},
		{context.DeadlineExceeded, false},
	} {
		assert.Equal(t, tc.want, refused(tc.err), "%v", tc.err)
	}
}

// A release waiting for its retry holds back one entry for each such release, of those the plan
// admitted on the slots its releases free (the last ones, as the engine leaves to the next plan
// when a release fails), and only those: a release that keeps failing must not hold back for
// minutes an entry with a slot of its own. The count of entries that still count on the
// releases handed out goes to the engine with them.
func TestLedgerHeldReleaseHoldsBackItsEntriesOnly(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLedger()
	l.now = func() time.Time { return now }
	require.Len(t, claimed(l, []plan.Action{act("r1", plan.Release)}, 0, l.asOf()), 1)
	l.finish("r1", errRefused)

	got, onReleases, _ := l.claim([]plan.Action{act("r1", plan.Release), act("r2", plan.Release),
		act("e1", plan.Enter), act("e2", plan.Enter), act("e3", plan.Enter)}, 2, l.asOf())
	assert.Equal(t, []string{"r2", "e1", "e2"}, nodesOf(got), "e3 waits for r1's slot; e2 counts on r2's, e1 has its own")
	assert.Equal(t, 1, onReleases, "e2 counts on r2's release")
	assert.True(t, l.entriesWaiting)

	got, onReleases, _ = l.claim([]plan.Action{act("r3", plan.Release), act("e4", plan.Enter)}, 1, l.asOf())
	assert.Equal(t, []string{"r3"}, nodesOf(got), "entries e1 and e2 in flight hold back every entry")
	assert.Zero(t, onReleases, "no entry handed out counts on r3")
}

func finished(l *ledger, node string) bool {
	replan, _ := l.finish(node, nil)
	return replan
}

// claimed returns the actions l.claim hands out.
func claimed(l *ledger, actions []plan.Action, onReleases int, asOf uint64) []plan.Action {
	out, _, _ := l.claim(actions, onReleases, asOf)
	return out
}

func TestEventNames(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	assert.Equal(t, "n1", podNode(pod))
	assert.Equal(t, "n1", podNode(cacheTombstone(pod)))
	assert.Empty(t, podNode(&corev1.Pod{}), "an unscheduled pod concerns no node")
	assert.Equal(t, "n", objectName(nodeAt("1")))
	assert.Equal(t, "n", objectName(cacheTombstone(nodeAt("1"))))
}

func cacheTombstone(obj any) any { return cache.DeletedFinalStateUnknown{Key: "k", Obj: obj} }

package controller

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	assert.Equal(t, []string{"a"}, nodesOf(l.claim([]plan.Action{act("a", plan.Adopt)}, 0, before)))
	assert.Empty(t, l.claim([]plan.Action{act("a", plan.Release)}, 0, before), "a node being written is not handed out twice")

	assert.False(t, l.finish("a"))
	assert.Equal(t, []string{"b"}, nodesOf(l.claim([]plan.Action{act("a", plan.Adopt), act("b", plan.Release)}, 0, before)),
		"a plan from a snapshot taken before a node's write returned is stale for that node only")

	after := l.asOf()
	assert.Equal(t, []string{"a"}, nodesOf(l.claim([]plan.Action{act("a", plan.Release)}, 0, after)), "a snapshot taken after the write may act")

	l.finish("a")
	l.finish("b")
	l.prune(l.asOf())
	assert.Empty(t, l.written, "writes every later snapshot includes are forgotten")
	assert.Empty(t, l.inflight)
}

func TestLedgerEntriesWaitForTaintingWrites(t *testing.T) {
	l := newLedger()
	assert.Len(t, l.claim([]plan.Action{act("r", plan.Release), act("e1", plan.Enter), act("e2", plan.Enter)}, 0, l.asOf()), 3,
		"the entries of one plan go together; a release in flight holds none back")

	assert.Empty(t, l.claim([]plan.Action{act("e3", plan.Enter)}, 0, l.asOf()), "entries in flight hold the next plan's back")
	assert.False(t, l.finish("r"))
	assert.False(t, l.finish("e1"), "one entry still in flight")
	assert.True(t, l.finish("e2"), "the last tainting write returned: re-plan the waiting entries now")
	assert.Equal(t, []string{"e3"}, nodesOf(l.claim([]plan.Action{act("e3", plan.Enter)}, 0, l.asOf())))
	l.finish("e3")

	assert.Len(t, l.claim([]plan.Action{act("j", plan.Adopt)}, 0, l.asOf()), 1)
	assert.Empty(t, l.claim([]plan.Action{act("e4", plan.Enter)}, 0, l.asOf()), "an adoption in flight holds entries back too")
	assert.True(t, l.finish("j"))
	assert.False(t, l.finish("x"), "nothing was waiting")
}

// A plan that admitted an entry on the slot of a release it cannot hand out (an earlier plan is
// still writing that node) holds the entry back until that write returns: it may fail.
func TestLedgerEntriesWaitForTheReleasesTheyCountOn(t *testing.T) {
	l := newLedger()
	require.Len(t, l.claim([]plan.Action{act("m", plan.Release)}, 0, l.asOf()), 1)
	assert.Empty(t, l.claim([]plan.Action{act("m", plan.Release), act("n", plan.Enter)}, 1, l.asOf()),
		"n's slot is m's, whose release is still being written")
	assert.Equal(t, []string{"o"}, nodesOf(l.claim([]plan.Action{act("m", plan.Release), act("o", plan.Enter)}, 0, l.asOf())),
		"an entry with room of its own does not wait")
	assert.True(t, l.finish("o"), "o's entry returned: re-plan (the waiting entry)")
	assert.Empty(t, l.claim([]plan.Action{act("m", plan.Release), act("n", plan.Enter)}, 1, l.asOf()), "m is still being written")
	assert.True(t, l.finish("m"), "m's release returned: re-plan the waiting entry now")
	assert.Equal(t, []string{"n"}, nodesOf(l.claim([]plan.Action{act("n", plan.Enter)}, 0, l.asOf())))
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
// it then. A release held back so holds back the entries admitted on the slot it frees.
func TestLedgerFailedWriteWaitsForItsRetry(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLedger()
	l.now = func() time.Time { return now }

	require.Len(t, l.claim([]plan.Action{act("a", plan.Enter)}, 0, l.asOf()), 1)
	l.finish("a")
	l.failed("a", now.Add(time.Second))
	assert.Empty(t, l.claim([]plan.Action{act("a", plan.Enter)}, 0, l.asOf()), "planned again after the failure, before its retry time")

	require.Len(t, l.claim([]plan.Action{act("r", plan.Release)}, 0, l.asOf()), 1)
	l.finish("r")
	l.failed("r", now.Add(time.Second))
	assert.Empty(t, l.claim([]plan.Action{act("r", plan.Release), act("e", plan.Enter)}, 1, l.asOf()),
		"the entry counts on r's release, which waits")
	assert.Equal(t, []string{"e"}, nodesOf(l.claim([]plan.Action{act("r", plan.Release), act("e", plan.Enter)}, 0, l.asOf())),
		"an entry that does not count on it goes")
	l.finish("e")

	now = now.Add(time.Second)
	l.prune(l.asOf())
	assert.Empty(t, l.retryAt, "retry times past are forgotten")
	assert.Equal(t, []string{"a", "r"}, nodesOf(l.claim([]plan.Action{act("a", plan.Enter), act("r", plan.Release)}, 0, l.asOf())),
		"at the retry time")
	l.finish("a")
	l.failed("a", now.Add(time.Second))
	l.finish("a") // a later write of the node returned
	assert.NotContains(t, l.retryAt, "a", "a write that returns clears the node's retry time")
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

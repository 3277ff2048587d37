package controller

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// failingRelease is a pool under maxConcurrent 1 whose one slot is held by m, past maxWaitForWarm
// (so its plan releases it), while n waits in maintenance for that slot: the first failures
// patches of m fail (a negative count: all of them). attempts counts them.
func failingRelease(t *testing.T, failures int32) (c *Controller, client *fake.Clientset, attempts *atomic.Int32) {
	t.Helper()
	now := time.Now()
	timedOut := tu.Node("m", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
			state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-0",
			state.TaintedAt, state.FormatTime(now.Add(-4*time.Hour)),
			state.UpgradedAt, state.FormatTime(now.Add(-3*time.Hour)))) // maxWaitForWarm (2h) passed
	candidate := tu.Node("n", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	client = withWarmer(timedOut, candidate)
	attempts = &atomic.Int32{}
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() != "m" {
			return false, nil, nil
		}
		if n := attempts.Add(1); failures < 0 || n <= failures {
			return true, nil, apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
		}
		return false, nil, nil
	})
	c = newTestController(t, client, nil, func(cfg *config.Config) { cfg.MaxConcurrent = intstr.FromInt32(1) }, false)
	return c, client, attempts
}

// startLeading starts c and makes it lead until the test ends.
func startLeading(t *testing.T, c *Controller) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, c.Start(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ctx
}

// In the event-driven mode too, an entry that counted on a release of the same plan for its slot
// of maxConcurrent is not written when the release fails (design.md rule 1).
func TestControllerFailedReleaseDoesNotFreeBudget(t *testing.T) {
	c, client, attempts := failingRelease(t, -1)
	startLeading(t, c)
	// The release failed, and was retried once: the entry had its chances.
	require.Eventually(t, func() bool { return attempts.Load() >= 2 }, 30*time.Second, 10*time.Millisecond)

	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var active []string
	for _, n := range nodes.Items {
		if ph := state.PhaseOf(&n); ph == state.PhaseTainted || ph == state.PhaseWarming {
			active = append(active, n.Name)
		}
	}
	assert.LessOrEqual(t, len(active), 1, "maxConcurrent is 1, but tainted/warming: %v", active)
}

// An entry left to the next plan because the release it counted on failed is re-planned after
// retryAfterError, like the failed release: a release that keeps failing is not re-sent in a loop.
func TestDeferredEntryDoesNotLoopAFailingRelease(t *testing.T) {
	c, _, attempts := failingRelease(t, -1)
	lead(t, c, retryAfterError/2)
	assert.LessOrEqual(t, int(attempts.Load()), 2,
		"the failing release of m should be retried after retryAfterError (%s), not in a loop driven by the deferred entry", retryAfterError)
}

// The entry held back for a failed release is written once a retry of the release succeeds.
func TestDeferredEntryFollowsTheRelease(t *testing.T) {
	c, client, _ := failingRelease(t, 2)
	ctx := startLeading(t, c)
	phase := func(name string) string {
		node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return state.PhaseOf(node)
	}
	// Two failures, retried after 1 s and 2 s: the entry follows within seconds.
	require.Eventually(t, func() bool { return phase("m") == "" && phase("n") == state.PhaseTainted }, 30*time.Second, 50*time.Millisecond,
		"m released and n entered; m %q, n %q", phase("m"), phase("n"))
}

// maxConcurrent holds when an entry gets no answer and the API server applies it later: node b's
// entry is lost on the way back (the re-read shows b untainted) and lands 300 ms later; node a
// enters maintenance meanwhile, and the whole-pool plan its change asks for must not give a the
// slot b's entry may still take.
func TestUnansweredEntryKeepsItsSlot(t *testing.T) {
	client := withWarmer(
		tu.Node("a", tu.WithLabels("pool", "notebooks")),
		tu.Node("b", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	apply := k8stesting.ObjectReaction(client.Tracker())
	var lost atomic.Bool
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() != "b" || lost.Swap(true) {
			return false, nil, nil
		}
		time.AfterFunc(300*time.Millisecond, func() { _, _, _ = apply(act) })
		return true, nil, errors.New("http2: client connection lost")
	})
	c := newTestController(t, client, nil, func(cfg *config.Config) { cfg.MaxConcurrent = intstr.FromInt32(1) }, false)
	ctx := startLeading(t, c)
	require.Eventually(t, lost.Load, 5*time.Second, 10*time.Millisecond, "b's entry sent")

	a, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	require.NoError(t, err)
	a.Spec.Unschedulable = true
	_, err = client.CoreV1().Nodes().Update(ctx, a, metav1.UpdateOptions{})
	require.NoError(t, err)

	phase := func(name string) string {
		n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return state.PhaseOf(n)
	}
	require.Eventually(t, func() bool { return phase("b") == state.PhaseTainted }, 5*time.Second, 10*time.Millisecond, "b's entry landed")
	time.Sleep(retryAfterError + 500*time.Millisecond) // b's retry, and the plans a's change asked for
	assert.Empty(t, phase("a"), "maxConcurrent 1: b holds the slot")
}

// Entries held back while an adoption was in flight are planned again as soon as it returns, also
// when it failed: its failure has no bearing on their slots. Here the adoption's retry is minutes
// away (a write refused again and again) and the resync is too, so only that re-plan enters x.
func TestEntriesHeldForAFailedAdoptionGoOnAtOnce(t *testing.T) {
	client := withWarmer(tu.Node("j", tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)))
	hold := make(chan struct{})
	var adoptions atomic.Int32
	client.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.PatchAction).GetName() != "j" {
			return false, nil, nil
		}
		adoptions.Add(1)
		<-hold
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "j", errors.New("denied by a webhook"))
	})
	c := testController(t, client, false)
	c.resync = 10 * time.Minute
	c.mu.Lock()
	// Refused many times already, its retry time just come: the next retry is minutes away.
	c.ledger.failing["j"] = streak{failures: 10, retryAt: time.Now()}
	c.mu.Unlock()
	stop := leading(t, c)
	defer stop()
	require.Eventually(t, func() bool { return adoptions.Load() == 1 }, 5*time.Second, 5*time.Millisecond, "j's adoption in flight")

	// x enters maintenance while j's adoption is in flight: its entry waits for it. (Through the
	// tracker: the fake clientset holds its lock while the adoption's reactor blocks.)
	require.NoError(t, client.Tracker().Add(tu.Node("x", tu.WithLabels("pool", "notebooks"), tu.Cordoned())))
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ledger.entriesWaiting
	}, 5*time.Second, 5*time.Millisecond, "x's entry held back")
	close(hold) // j's adoption is refused

	require.Eventually(t, func() bool {
		n, err := client.CoreV1().Nodes().Get(context.Background(), "x", metav1.GetOptions{})
		return err == nil && state.PhaseOf(n) == state.PhaseTainted
	}, 5*time.Second, 10*time.Millisecond, "x entered once j's write returned, not at j's retry")
	assert.Equal(t, int32(1), adoptions.Load(), "j waits for its retry")
}

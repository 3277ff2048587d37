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
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// failingRelease is a pool under maxConcurrent 1 whose one slot is held by m, past maxWaitForWarm
// (so its plan releases it), while n waits in maintenance for that slot: the first failures
// patches of m fail (a negative count: all of them). patches records when each patch of m was sent.
func failingRelease(t *testing.T, failures int32) (c *Controller, client *fake.Clientset, patches *attempts) {
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
	patches = &attempts{}
	var sent atomic.Int32
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() != "m" {
			return false, nil, nil
		}
		patches.add()
		if n := sent.Add(1); failures < 0 || n <= failures {
			return true, nil, apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
		}
		return false, nil, nil
	})
	c = newTestController(t, client, nil, func(cfg *config.Config) { cfg.MaxConcurrent = intstr.FromInt32(1) }, false)
	return c, client, patches
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
	c, client, patches := failingRelease(t, -1)
	stop := leading(t, c)
	// The release failed, and was retried twice (after 1 s, then 2 s): the entry had its chances,
	// among them the re-plan of the deferred entry a second after the first retry, which finds
	// the release waiting for its next one.
	patches.waitAttempts(t, 3)
	// Stopped, with every write returned (Lead waits for them): an entry written just after the
	// third attempt is in the nodes read below, not lost after them.
	stop()

	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var active []string
	for _, n := range nodes.Items {
		if ph := state.PhaseOf(&n); ph == state.PhaseTainted || ph == state.PhaseWarming {
			active = append(active, n.Name)
		}
	}
	assert.Equal(t, []string{"m"}, active, "maxConcurrent is 1 and m's release never went through: n waits")
}

// An entry left to the next plan because the release it counted on failed is re-planned after
// retryAfterError, like the failed release: a release that keeps failing is not re-sent in a loop.
func TestDeferredEntryDoesNotLoopAFailingRelease(t *testing.T) {
	c, _, patches := failingRelease(t, -1)
	stop := leading(t, c)
	// Attempts at 0 s, 1 s and 3 s (retryAfterError, doubled at the second failure), while the
	// deferred entry is re-planned every retryAfterError: at 2 s it must not send m's release.
	patches.waitAttempts(t, 3)
	stop()
	at := patches.times()
	for i := 1; i < len(at); i++ {
		wait := min(retryAfterError<<(i-1), maxRetryAfterError) // 5xx: 1 s, 2 s, 4 s, ...
		if !assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), wait,
			"attempt %d of m's failing release came %s after the one before, not after its retry delay %s: re-sent by the deferred entry's re-plan",
			i+1, at[i].Sub(at[i-1]), wait) {
			break
		}
	}
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
// entry is lost on the way back (the re-read shows b untainted) and lands later; node a enters
// maintenance meanwhile, and the whole-pool plan its change asks for must not give a the slot
// b's entry may still take. Once b's slot frees (an operator removes its taint), a is entered.
func TestUnansweredEntryKeepsItsSlot(t *testing.T) {
	client := withWarmer(
		tu.Node("a", tu.WithLabels("pool", "notebooks")),
		tu.Node("b", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	apply := k8stesting.ObjectReaction(client.Tracker())
	var lost atomic.Bool
	land, landed := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-land:
		default:
			close(land) // a test stopped early: the held entry goroutine ends
		}
	})
	var patchesOfA attempts
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		switch name := act.(k8stesting.PatchAction).GetName(); {
		case name == "a":
			patchesOfA.add()
			return false, nil, nil
		case name != "b" || lost.Swap(true):
			return false, nil, nil
		}
		go func() {
			defer close(landed)
			<-land
			_, _, _ = apply(act)
		}()
		return true, nil, errors.New("http2: client connection lost")
	})
	c := newTestController(t, client, nil, func(cfg *config.Config) { cfg.MaxConcurrent = intstr.FromInt32(1) }, false)
	m := metrics.New()
	c.metrics = m
	stop := leading(t, c)
	ctx := context.Background()
	require.Eventually(t, lost.Load, 5*time.Second, 10*time.Millisecond, "b's entry sent")

	a, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	require.NoError(t, err)
	a.Spec.Unschedulable = true
	_, err = client.CoreV1().Nodes().Update(ctx, a, metav1.UpdateOptions{})
	require.NoError(t, err)
	// a's change in the cache, and a whole-pool plan after it, while b's entry has not landed.
	require.Eventually(t, func() bool {
		n, err := c.poolNodes.Get("a")
		return err == nil && n.Spec.Unschedulable
	}, 5*time.Second, 5*time.Millisecond, "a's cordon seen")
	plansDone(t, c, m, 1)

	close(land)
	<-landed
	phase := func(name string) string {
		n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return state.PhaseOf(n)
	}
	require.Equal(t, state.PhaseTainted, phase("b"), "b's entry landed")
	// The plans b's landing asks for, and b's retry (retryAfterError after its entry returned),
	// are in the window checked below.
	require.Eventually(t, func() bool {
		n, err := c.poolNodes.Get("b")
		return err == nil && state.PhaseOf(n) == state.PhaseTainted
	}, 5*time.Second, 5*time.Millisecond, "b's entry seen")
	time.Sleep(retryAfterError)
	plansDone(t, c, m, 1)
	assert.Empty(t, phase("a"), "maxConcurrent 1: b holds the slot")

	// An operator removes b's taint: b is released (external) and its slot goes to a.
	freed := time.Now()
	b, err := client.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{})
	require.NoError(t, err)
	b.Spec.Taints = nil
	_, err = client.CoreV1().Nodes().Update(ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return phase("a") == state.PhaseTainted }, 10*time.Second, 10*time.Millisecond,
		"a entered once b's slot freed")
	stop()
	for _, at := range patchesOfA.times() {
		assert.False(t, at.Before(freed), "a patched at %s, before b's slot freed at %s", at.Format(time.StampMicro), freed.Format(time.StampMicro))
	}
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

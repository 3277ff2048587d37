package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// failingRelease is an engine with the given maxConcurrent over a pool where m, past
// maxWaitForWarm, is to be released but every patch of it fails (a 5xx, a webhook), while n
// waits in maintenance.
func failingRelease(t *testing.T, budget intstr.IntOrString) (*Engine, *fake.Clientset) {
	t.Helper()
	timedOut := tu.Node("m", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
			state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-0",
			state.TaintedAt, state.FormatTime(t0.Add(-4*time.Hour)),
			state.UpgradedAt, state.FormatTime(t0.Add(-3*time.Hour)))) // maxWaitForWarm (2h) passed
	candidate := tu.Node("n", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	client := withWarmer(timedOut, candidate)
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() == "m" {
			return true, nil, apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
		}
		return false, nil, nil
	})
	return budgetEngine(t, client, budget), client
}

// budgetEngine is an engine of the test configuration with the given maxConcurrent.
func budgetEngine(t *testing.T, client *fake.Clientset, budget intstr.IntOrString) *Engine {
	t.Helper()
	cfg := testConfig(t)
	cfg.MaxConcurrent = budget
	e, err := New(Options{Config: cfg, Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	return e
}

// The planner lets a release free a slot of maxConcurrent for an entry of the same plan: when the
// release fails (a 5xx, a webhook, conflicts to the end), the entry is left to the next cycle,
// so that the budget holds (design.md rule 1).
func TestFailedReleaseDoesNotFreeBudget(t *testing.T) {
	e, client := failingRelease(t, intstr.FromInt32(1))
	res, err := e.RunOnce(context.Background())
	require.Error(t, err, "the release failed")
	require.Len(t, res.Plan.Actions, 2, "release of m (timeout) and, with the slot it frees, entry of n")

	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var active []string
	for _, n := range nodes.Items {
		if ph := state.PhaseOf(&n); ph == state.PhaseTainted || ph == state.PhaseWarming {
			active = append(active, n.Name)
		}
	}
	assert.LessOrEqual(t, len(active), 1, "maxConcurrent is 1, but tainted/warming after the cycle: %v (entered: %d)",
		active, res.Applied[plan.Enter])
}

// A failed release holds back only the entries that needed its slot: with room in the budget
// (maxConcurrent 5, one node active) or no budget (0), the entry is written.
func TestFailedReleaseDefersEntryOnlyWhenBudgetNeedsIt(t *testing.T) {
	for _, budget := range []intstr.IntOrString{intstr.FromInt32(5), intstr.FromInt32(0)} {
		t.Run(budget.String(), func(t *testing.T) {
			e, client := failingRelease(t, budget)
			for range 3 {
				_, _ = e.RunOnce(context.Background())
			}
			n, err := client.CoreV1().Nodes().Get(context.Background(), "n", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, state.PhaseTainted, state.PhaseOf(n),
				"maxConcurrent %s leaves room for n even with m still warming, yet n is never entered", budget.String())
		})
	}
}

// A release the planner counted on for an entry's slot that turns out to have nothing to write
// (the node, re-read from the latest version the event-driven mode knows, is back in maintenance:
// nothing left to cancel) keeps the slot: the entry is left to the next plan.
func TestReleaseWithNothingToWriteDoesNotFreeBudget(t *testing.T) {
	left := tu.Node("m", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseTainted, state.Owner, "prewarm/test",
			state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-1",
			state.TaintedAt, state.FormatTime(t0.Add(-2*time.Hour)),
			state.LeftMaintenanceAt, state.FormatTime(t0.Add(-time.Hour)))) // cancelAfter passed
	candidate := tu.Node("n", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	client := withWarmer(left, candidate)
	e := budgetEngine(t, client, intstr.FromInt32(1))
	obs, err := e.Observe(context.Background())
	require.NoError(t, err)
	p := e.Planner().Compute(obs.Snapshot)
	require.Len(t, p.Actions, 2, "release of m (cancelled) and, on its slot, entry of n: %+v", p.Actions)
	require.Equal(t, 1, p.EntriesOnReleases)

	// Cordoned again, its left-maintenance record already cleared by another writer.
	back := left.DeepCopy()
	back.ResourceVersion = "2"
	back.Spec.Unschedulable = true
	delete(back.Annotations, state.LeftMaintenanceAt)
	var deferred []string
	res, err := e.ApplyNotify(context.Background(), obs, p, func(name string) *corev1.Node {
		if name == "m" {
			return back
		}
		return nil
	}, func(a plan.Action, _ *Written, err error) {
		if errors.Is(err, ErrDeferred) {
			deferred = append(deferred, a.Node)
		}
	})
	require.NoError(t, err)
	assert.Zero(t, res.Applied[plan.Release], "nothing to release on the fresher node")
	assert.Zero(t, res.Applied[plan.Enter], "m still counts: maxConcurrent is 1")
	assert.Equal(t, []string{"n"}, deferred)
	assert.Empty(t, patches(client))

	// Released meanwhile by someone else (an operator removed the taint and the records): the
	// slot is free, and the entry goes.
	gone := tu.Node("m", tu.WithLabels("pool", "notebooks"))
	gone.ResourceVersion = "3"
	res, err = e.ApplyNotify(context.Background(), obs, p, func(name string) *corev1.Node {
		if name == "m" {
			return gone
		}
		return nil
	}, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Enter], "m no longer counts")
}

package controller

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	typedappsv1 "k8s.io/client-go/kubernetes/typed/apps/v1"
	k8stesting "k8s.io/client-go/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/ratelimit"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// The DaemonSet controller writes a new revision before it records the generation as observed,
// but the two arrive on separate watches: with the DaemonSet seen observed and the revision cache
// behind, the old revision would be current, and an old pod Ready on a warming node would release
// it. The revisions are read from the API server once per observed generation.
// revs returns the revisions c.revisionsFor plans with, and fails t if it says they were not
// read.
func revs(t *testing.T, c *Controller, ds *appsv1.DaemonSet, cached []*appsv1.ControllerRevision) []*appsv1.ControllerRevision {
	t.Helper()
	out, read := c.revisionsFor(context.Background(), ds, cached)
	require.True(t, read)
	return out
}

func TestRevisionsAreReadOncePerObservedGeneration(t *testing.T) {
	ds := tu.DaemonSet("prewarm", "warmer")
	ds.Generation, ds.Status.ObservedGeneration = 2, 2
	old, cur := tu.Revision(ds, 1, "old"), tu.Revision(ds, 2, "new")
	old.ResourceVersion, cur.ResourceVersion = "10", "11"
	client := fake.NewClientset(old, cur)
	lists := 0
	fail := false
	client.PrependReactor("list", "controllerrevisions", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists++
		if fail {
			return true, nil, errors.New("unavailable")
		}
		return false, nil, nil
	})
	c := testController(t, client, false)
	ctx := context.Background()
	behind := []*appsv1.ControllerRevision{old} // the cache has not seen the new revision yet

	assert.Equal(t, "new", plan.CurrentRevision(ds, revs(t, c, ds, behind)))
	assert.Equal(t, "new", plan.CurrentRevision(ds, revs(t, c, ds, behind)), "still merged until the next generation")
	assert.Equal(t, 1, lists, "one read per observed generation")

	// Not observed yet: no revision is current, nothing is read.
	next := ds.DeepCopy()
	next.Generation = 3
	assert.Equal(t, "", plan.CurrentRevision(next, revs(t, c, next, behind)))
	assert.Equal(t, 1, lists)

	// Observed: read again. A read that fails leaves no revision (no pod counts as warm), and
	// the plans of the next second read nothing (a burst of per-node plans would each send one).
	next.Status.ObservedGeneration = 3
	fail = true
	got, read := c.revisionsFor(ctx, next, behind)
	assert.Empty(t, got)
	assert.False(t, read)
	fail = false
	got, read = c.revisionsFor(ctx, next, behind)
	assert.Empty(t, got, "not retried within a second")
	assert.False(t, read)
	assert.Equal(t, 2, lists)
	c.mu.Lock()
	c.liveFailed = c.liveFailed.Add(-retryAfterError)
	c.mu.Unlock()
	require.NotEmpty(t, revs(t, c, next, behind), "retried a second later")
	assert.Equal(t, 3, lists)

	// A newer cached version of a revision (a rollback bumps an old revision's number) wins.
	bumped := old.DeepCopy()
	bumped.Revision, bumped.ResourceVersion = 3, "12"
	assert.Equal(t, "old", plan.CurrentRevision(next, revs(t, c, next, []*appsv1.ControllerRevision{bumped, cur})))
}

// Every plan waits for the read of the revisions, releases included: it goes first through the
// client's rate limiter, not behind a burst of entries or adoptions.
func TestRevisionsReadIsUrgent(t *testing.T) {
	ds := tu.DaemonSet("prewarm", "warmer")
	ds.Generation, ds.Status.ObservedGeneration = 2, 2
	client := fake.NewClientset(tu.Revision(ds, 2, "new"))
	c := testController(t, client, false)
	lists := &urgentLists{}
	c.client = revisionListsOf{Clientset: client, lists: lists}
	assert.Equal(t, "new", plan.CurrentRevision(ds, revs(t, c, ds, nil)))
	assert.Equal(t, []bool{true}, lists.urgent)
}

// revisionListsOf is a clientset that records in lists whether each list of ControllerRevisions
// was marked urgent (ratelimit.Urgent).
type revisionListsOf struct {
	*fake.Clientset
	lists *urgentLists
}

type urgentLists struct{ urgent []bool }

func (c revisionListsOf) AppsV1() typedappsv1.AppsV1Interface {
	return revisionListsApps{AppsV1Interface: c.Clientset.AppsV1(), lists: c.lists}
}

type revisionListsApps struct {
	typedappsv1.AppsV1Interface
	lists *urgentLists
}

func (a revisionListsApps) ControllerRevisions(ns string) typedappsv1.ControllerRevisionInterface {
	return revisionLists{ControllerRevisionInterface: a.AppsV1Interface.ControllerRevisions(ns), lists: a.lists}
}

type revisionLists struct {
	typedappsv1.ControllerRevisionInterface
	lists *urgentLists
}

func (r revisionLists) List(ctx context.Context, opts metav1.ListOptions) (*appsv1.ControllerRevisionList, error) {
	r.lists.urgent = append(r.lists.urgent, ratelimit.IsUrgent(ctx))
	return r.ControllerRevisionInterface.List(ctx, opts)
}

package controller

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Once the nodeMaintenance informer has synced, its list and watch can still start failing (RBAC
// taken away, a conversion webhook that is down): the informer keeps serving what it last read,
// and plans must not take that for the cluster. Node a is tainted for its NodeMaintenance, and
// node b's waits for the budget (maxConcurrent 1). The watch ends and every read fails; b's
// object is deleted meanwhile. An operator opens a: the budget is free, but the source is
// unknown, so b is not entered for the object the cache still holds, and no plan counts as a
// success. Once a list succeeds, b's maintenance is seen to be over, and b is never tainted.
func TestStaleMaintenanceCacheIsUnknown(t *testing.T) {
	a, _ := taintedForMaintenance()
	b := tu.Node("b", tu.WithLabels("pool", "notebooks"))
	client := withWarmer(a, b)
	gvr := sources.GVR(config.Default())
	nm := func(name, node string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": gvr.GroupVersion().String(), "kind": "NodeMaintenance",
			"metadata": map[string]any{"name": name, "uid": "uid-" + name},
			"spec":     map[string]any{"nodeName": node},
		}}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"}, nm("nm", "a"), nm("nm-b", "b"))
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, dyn, func(cfg *config.Config) {
		cfg.Maintenance.NodeMaintenance.Enabled = true
		cfg.MaxConcurrent = intstr.FromInt32(1)
	}, false, log)
	m := metrics.New()
	c.metrics = m

	var failing atomic.Bool
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, apierrors.NewInternalError(errors.New("conversion webhook: connection refused"))
		}
		return false, nil, nil
	})
	var mu sync.Mutex
	var watches []*watch.FakeWatcher
	dyn.PrependWatchReactor(gvr.Resource, func(k8stesting.Action) (bool, watch.Interface, error) {
		if failing.Load() {
			return true, nil, apierrors.NewInternalError(errors.New("conversion webhook: connection refused"))
		}
		mu.Lock()
		defer mu.Unlock()
		w := watch.NewFake()
		watches = append(watches, w)
		return true, w, nil
	})

	leading(t, c)
	require.Eventually(t, func() bool { return gaugeValue(t, m, lastSuccess) > 0 }, 10*time.Second, 10*time.Millisecond, log.String())
	require.Equal(t, state.PhaseTainted, node(t, client, "a").Annotations[state.Phase])
	require.Empty(t, node(t, client, "b").Annotations[state.Phase], "waits for the budget")

	failing.Store(true)
	mu.Lock()
	watches[len(watches)-1].Stop()
	mu.Unlock()
	require.Eventually(t, func() bool {
		return strings.Contains(log.String(), "reading the maintenance resource failed; no node is entered or leaves maintenance until it reads again")
	}, 10*time.Second, 10*time.Millisecond, log.String())
	require.NoError(t, dyn.Tracker().Delete(gvr, "", "nm-b"))
	since := gaugeValue(t, m, lastSuccess)

	open := node(t, client, "a").DeepCopy()
	open.Spec.Taints = nil
	_, err := client.CoreV1().Nodes().Update(t.Context(), open, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return node(t, client, "a").Annotations[state.ReleaseReason] == state.ReasonExternal
	}, 10*time.Second, 10*time.Millisecond, log.String())
	plansDone(t, c, m, 3)
	assert.Empty(t, node(t, client, "b").Annotations[state.Phase], "not entered for an object the cache may hold stale\n%s", log.String())
	assert.Equal(t, since, gaugeValue(t, m, lastSuccess), "no success while the source is unknown")

	failing.Store(false)
	require.Eventually(t, func() bool {
		return strings.Contains(log.String(), "maintenance resource reads again")
	}, 20*time.Second, 10*time.Millisecond, log.String())
	require.Eventually(t, func() bool { return gaugeValue(t, m, lastSuccess) > since }, 10*time.Second, 10*time.Millisecond, log.String())
	plansDone(t, c, m, 2)
	assert.Empty(t, node(t, client, "b").Annotations[state.Phase], "b's maintenance is over\n%s", log.String())
}

func node(t *testing.T, client interface {
	Tracker() k8stesting.ObjectTracker
}, name string) *corev1.Node {
	t.Helper()
	obj, err := client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("nodes"), "", name)
	require.NoError(t, err)
	return obj.(*corev1.Node)
}

// What counts as a complete read, and what as a failure, on each path the informer reads by:
// paged lists, watch lists (initial events ended by a bookmark), watches that would resume from
// the cache's version (answered as expired while it is stale, so that the whole resource is read
// again), and errors a watch delivers. A complete read ends a failure once its read mark (the
// list's last item, or the event after the bookmark) reaches the informer's handlers.
func TestMaintenanceReads(t *testing.T) {
	gvr := sources.GVR(config.Default())
	gr := gvr.GroupResource()
	var changes atomic.Int32
	newReads := func() *maintenanceReads {
		changes.Store(0)
		return &maintenanceReads{log: slog.New(slog.DiscardHandler), resource: "r", changed: func() { changes.Add(1) }, hasSynced: func() bool { return true }}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"})
	var listErr, watchErr error
	var cont string
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if listErr != nil {
			return true, nil, listErr
		}
		l := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": gvr.GroupVersion().String(), "kind": "NodeMaintenanceList"}}
		l.SetContinue(cont)
		l.SetResourceVersion("7")
		l.Items = []unstructured.Unstructured{{Object: map[string]any{"metadata": map[string]any{"name": "nm"}}}}
		return true, l, nil
	})
	var fw *watch.FakeWatcher
	dyn.PrependWatchReactor(gvr.Resource, func(k8stesting.Action) (bool, watch.Interface, error) {
		if watchErr != nil {
			return true, nil, watchErr
		}
		fw = watch.NewFakeWithChanSize(4, false)
		return true, fw, nil
	})
	ctx := t.Context()
	list := func(lw *cache.ListWatch) []unstructured.Unstructured {
		l, err := lw.ListWithContextFunc(ctx, metav1.ListOptions{})
		if err != nil {
			return nil
		}
		return l.(*unstructured.UnstructuredList).Items
	}
	watchFrom := func(lw *cache.ListWatch, initial bool) watch.Interface {
		w, err := lw.WatchFuncWithContext(ctx, metav1.ListOptions{SendInitialEvents: &initial, ResourceVersion: "9"})
		if err != nil {
			return nil
		}
		return w
	}
	next := func(w watch.Interface) watch.Event {
		select {
		case e := <-w.ResultChan():
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
			return watch.Event{}
		}
	}
	internal := apierrors.NewInternalError(errors.New("conversion webhook: connection refused"))

	// A failed list holds until a list has read every page, and its read mark (its last item)
	// has reached the handlers.
	r := newReads()
	lw := r.listWatch(dyn.Resource(gvr))
	require.Len(t, list(lw), 1, "no mark while nothing failed")
	listErr = internal
	list(lw)
	assert.True(t, r.stale())
	assert.Equal(t, int32(1), changes.Load(), "a re-plan when it starts")
	listErr, cont = nil, "page-2"
	require.Len(t, list(lw), 1, "a first page is not the whole set")
	_, err := lw.WatchFuncWithContext(ctx, metav1.ListOptions{ResourceVersion: "9"})
	assert.True(t, apierrors.IsResourceExpired(err), "no watch resumes while the cache is stale: %v", err)
	assert.True(t, r.stale())
	cont = ""
	items := list(lw)
	require.Len(t, items, 2)
	mark := &items[1]
	assert.True(t, isReadMark(mark))
	assert.Equal(t, "7", mark.GetResourceVersion())
	assert.True(t, r.stale(), "not in the cache yet")
	r.seen(&items[0])
	assert.True(t, r.stale())
	r.seen(mark)
	assert.False(t, r.stale())
	assert.Equal(t, int32(2), changes.Load(), "a re-plan when it ends")

	// A mark made before a new failure ends nothing.
	listErr = internal
	list(lw)
	listErr = nil
	old := list(lw)[1]
	listErr = internal
	list(lw)
	r.seen(&old)
	assert.True(t, r.stale())
	listErr = nil
	r.seen(&list(lw)[1])
	assert.False(t, r.stale())

	// A watch that failed to start, or an error a watch delivers, holds until the whole resource
	// is read again: no watch resumes meanwhile.
	r = newReads()
	lw = r.listWatch(dyn.Resource(gvr))
	watchErr = apierrors.NewTooManyRequests("slow down", 1)
	watchFrom(lw, false)
	assert.True(t, r.stale())
	watchErr = nil
	assert.Nil(t, watchFrom(lw, false))
	r.seen(&list(lw)[1])
	assert.False(t, r.stale())
	w := watchFrom(lw, false)
	require.NotNil(t, w)
	fw.Error(&internal.ErrStatus)
	require.Equal(t, watch.Error, next(w).Type)
	assert.True(t, r.stale())
	w.Stop()
	assert.Nil(t, watchFrom(lw, false))
	// A watch list completes the read with the bookmark that ends its initial events, followed
	// by its mark.
	w = watchFrom(lw, true)
	bookmark := &unstructured.Unstructured{Object: map[string]any{"apiVersion": gvr.GroupVersion().String(), "kind": "NodeMaintenance"}}
	bookmark.SetResourceVersion("11")
	fw.Action(watch.Bookmark, bookmark.DeepCopy())
	require.Equal(t, watch.Bookmark, next(w).Type)
	bookmark.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	fw.Action(watch.Bookmark, bookmark)
	require.Equal(t, watch.Bookmark, next(w).Type)
	e := next(w)
	require.True(t, isReadMark(e.Object), "the mark follows the end of the initial events")
	assert.Equal(t, "11", e.Object.(*unstructured.Unstructured).GetResourceVersion())
	assert.True(t, r.stale())
	r.seen(e.Object)
	assert.False(t, r.stale())
	w.Stop()

	// Neither an expired version (routine: the informer lists again), nor a 404
	// (maintenanceGone), nor what fails once the informer is stopped.
	r = newReads()
	lw = r.listWatch(dyn.Resource(gvr))
	watchErr = apierrors.NewResourceExpired("too old resource version")
	watchFrom(lw, false)
	listErr = apierrors.NewNotFound(gr, "")
	list(lw)
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	listErr = internal
	_, _ = lw.ListWithContextFunc(stopped, metav1.ListOptions{})
	watchErr = internal
	_, _ = lw.WatchFuncWithContext(stopped, metav1.ListOptions{})
	assert.False(t, r.stale())
	assert.Zero(t, changes.Load())
}

package controller

import (
	"errors"
	"io"
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

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Once the nodeMaintenance informer has synced, its list and watch can still start failing (RBAC
// taken away, a conversion webhook that is down): the informer keeps serving what it last read,
// and plans must not take that for the cluster. Node a is tainted for its NodeMaintenance, and
// node b's waits for the budget (maxConcurrent 1). The watch ends and every list fails; b's
// object is deleted meanwhile. An operator opens a: the budget is free, but the source is
// unknown, so b is not entered for the object the cache still holds, and no plan counts as a
// success. Once the lists succeed (the hold over: the fake does not move resource versions), b's
// maintenance is seen to be over, and b is never tainted.
func TestStaleMaintenanceCacheIsUnknown(t *testing.T) {
	hold := maintenanceReadErrorHold
	maintenanceReadErrorHold = 3 * time.Second
	t.Cleanup(func() { maintenanceReadErrorHold = hold })

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

func TestRoutineWatchEnd(t *testing.T) {
	gr := schema.GroupResource{Group: "nodemaintenance.medik8s.io", Resource: "nodemaintenances"}
	assert.True(t, routineWatchEnd(apierrors.NewResourceExpired("too old resource version")))
	assert.True(t, routineWatchEnd(apierrors.NewGone("gone")))
	assert.True(t, routineWatchEnd(io.EOF))
	assert.False(t, routineWatchEnd(apierrors.NewForbidden(gr, "", errors.New("RBAC"))))
	assert.False(t, routineWatchEnd(apierrors.NewInternalError(errors.New("webhook"))))
}

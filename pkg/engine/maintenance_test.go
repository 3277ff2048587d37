package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
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
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A run --once cycle that reads the nodeMaintenance resource as not served (404) while node a is
// tainted for one of its objects reads it again for notServedConfirm before it takes the source
// for empty: an API server that restarts answers 404 for a while for custom resources it serves,
// and with cancelAfter 0s node a would be released cancelled before its upgrade. Without such a
// node a 404 is taken at once; a read that fails meanwhile is a maintenance source not read.
func TestNotServedIsConfirmedWhileANodeRecordsTheResource(t *testing.T) {
	defer func(c, r time.Duration) { notServedConfirm, notServedRetry = c, r }(notServedConfirm, notServedRetry)
	notServedConfirm, notServedRetry = 400*time.Millisecond, 50*time.Millisecond
	gvr := sources.GVR(config.Default())
	for _, tc := range []struct {
		name string
		// managed: a is tainted for the object; otherwise a is a pool node in maintenance.
		managed bool
		// notFound is how many reads are answered 404 (-1: all); failAfter answers the reads
		// after them with an error.
		notFound  int
		failAfter bool
		wantReads int // -1: more than one
		want      string
	}{
		{name: "a passing 404", managed: true, notFound: 2, wantReads: 3, want: "unchanged"},
		{name: "gone for good", managed: true, notFound: -1, wantReads: -1, want: state.ReasonCancelled},
		{name: "a read failing meanwhile", managed: true, notFound: 1, failAfter: true, wantReads: 2, want: "unchanged"},
		{name: "no node records it", notFound: -1, wantReads: 1, want: "unchanged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tu.Node("a", tu.WithLabels("pool", "notebooks"))
			if tc.managed {
				a = tu.Node("a", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"),
					tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
					tu.WithAnnotations(state.Phase, state.PhaseTainted, state.Owner, "prewarm/test",
						state.MaintenanceID, "uid-nm", state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-1",
						state.TaintedAt, state.FormatTime(t0.Add(-time.Minute))))
			}
			nm := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": gvr.GroupVersion().String(), "kind": "NodeMaintenance",
				"metadata": map[string]any{"name": "nm", "uid": "uid-nm"},
				"spec":     map[string]any{"nodeName": "a"},
			}}
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"}, nm)
			var reads atomic.Int32
			dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				n := int(reads.Add(1))
				switch {
				case tc.notFound < 0 || n <= tc.notFound:
					return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "")
				case tc.failAfter:
					return true, nil, apierrors.NewServiceUnavailable("the API server is starting")
				}
				return false, nil, nil
			})
			cfg := testConfig(t)
			cfg.Maintenance.NodeMaintenance.Enabled = true
			cfg.CancelAfter = config.NewDuration(0)
			client := withWarmer(a)
			e, err := New(Options{
				Config: cfg, Client: client, Dynamic: dyn, Clock: clocktesting.NewFakePassiveClock(t0),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			require.NoError(t, err)

			start := time.Now()
			res, err := e.RunOnce(context.Background())
			took := time.Since(start)
			if tc.failAfter {
				require.ErrorIs(t, err, ErrMaintenanceNotRead)
				assert.Contains(t, err.Error(), "the API server is starting")
			} else {
				require.NoError(t, err)
			}
			if tc.wantReads < 0 {
				assert.Greater(t, int(reads.Load()), 1)
			} else {
				assert.Equal(t, tc.wantReads, int(reads.Load()), "reads of the resource")
			}
			if tc.want == "unchanged" {
				assert.Zero(t, res.Applied[plan.Release]+res.Applied[plan.Record]+res.Applied[plan.Enter], "%v", res.Plan.Actions)
				assert.Empty(t, patches(client))
				return
			}
			assert.Equal(t, 1, res.Applied[plan.Release], "%v", res.Plan.Actions)
			n, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, tc.want, n.Annotations[state.ReleaseReason])
			assert.GreaterOrEqual(t, took, notServedConfirm, "taken for empty only once confirmed")
		})
	}
}

// Cleanup (and the uninstall hook) releases every managed node whatever the maintenance objects
// say, and reads none: an uninstall does not depend on the maintenance resource being readable.
// The release keeps the NodeMaintenance recorded on the node, cordoned by it meanwhile: with it
// dropped, the next cycle would taint the node again for the same object.
func TestCleanupReadsNoMaintenanceObject(t *testing.T) {
	gvr := sources.GVR(config.Default())
	a := tu.Node("a", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"), tu.Cordoned(),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseTainted, state.Owner, "prewarm/test", state.MaintenanceID, "uid-nm"))
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"})
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("the maintenance resource is not to be read")
	})
	cfg := testConfig(t)
	cfg.Maintenance.NodeMaintenance.Enabled = true
	client := withWarmer(a)
	e, err := New(Options{
		Config: cfg, Client: client, Dynamic: dyn, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	res, err := e.Cleanup(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release])
	assert.Empty(t, dyn.Actions(), "no read of the maintenance resource")
	n, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, state.ReasonCleanup, n.Annotations[state.ReleaseReason])
	assert.ElementsMatch(t, []string{plan.SourceCordoned, "uid-nm"}, strings.Split(n.Annotations[state.MaintenanceID], ","))
}

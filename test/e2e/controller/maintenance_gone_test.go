package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The maintenance resource's CRD is deleted while the controller runs, and with it its objects:
// the maintenance they held ends (the tainted node is released after cancelAfter). The controller
// says once that the resource is no longer served and stops watching it (client-go would
// otherwise re-list it forever, and plans would go on reading it as a served, empty source); its
// plans warn that it is not served; and a resync finds it again once the CRD is back.
//
// The test installs a CRD of its own: the other tests of the package use NodeMaintenance.
func TestMaintenanceResourceGoneWhileRunning(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: "gone.e2e.image-prewarmer.io", Version: "v1", Resource: "drains"}
	const kind = "Drain"
	ctx := context.Background()
	require.NoError(t, cluster.InstallMaintenanceCRD(ctx, gvr, kind))
	t.Cleanup(func() { assert.NoError(t, cluster.DeleteMaintenanceCRD(context.Background(), gvr)) })

	e := newEnv(t, func(cfg *config.Config) {
		nm := &cfg.Maintenance.NodeMaintenance
		nm.Group, nm.Version, nm.Resource = gvr.Group, gvr.Version, gvr.Resource
		cfg.CancelAfter = config.NewDuration(2 * time.Second)
	})
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	log := &tu.LogBuffer{}
	r := e.start("only", fastElection, withLog(log)) // resync every 2s
	maintain := func(short string) {
		t.Helper()
		_, err := cluster.CreateMaintenance(e.Ctx, gvr, kind, e.NodeName(short), e.NodeName(short))
		require.NoError(t, err)
	}
	maintain("a")
	e.waitPhase("a", state.PhaseTainted)

	require.NoError(t, cluster.DeleteMaintenanceCRD(e.Ctx, gvr))
	const gone = `msg="maintenance resource is no longer served; its source is empty until a resync finds it served again" resource=drains.v1.gone.e2e.image-prewarmer.io`
	notServed := "resource drains.v1.gone.e2e.image-prewarmer.io is not served"
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		s := log.String()
		return strings.Contains(s, gone) && strings.Contains(s, notServed), nil
	}), "the controller reports the resource gone, and its plans warn that it is not served:\n%s", log.String())
	e.waitReleased("a")
	e.RequireReleased("a", state.ReasonCancelled)

	// Resyncs (every 2s) probe the resource, and find it still gone: one report, not one per
	// failed list or resync.
	e.waitReconciles(r, reconcileCount(t, r), 2, "two resyncs")
	assert.Equal(t, 1, strings.Count(log.String(), gone), "reported once")
	e.RequireUntouched("b")

	require.NoError(t, cluster.InstallMaintenanceCRD(e.Ctx, gvr, kind))
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return strings.Contains(log.String(), "maintenance resource is now served; watching it"), nil
	}), "a resync finds the resource again:\n%s", log.String())
	maintain("b")
	e.waitPhase("b", state.PhaseTainted)
}

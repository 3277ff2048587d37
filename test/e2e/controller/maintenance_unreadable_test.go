package controller_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// failingResource answers the requests for the NodeMaintenance resource with a 500 while failing
// is set, as the API server does when the CRD's conversion webhook is down; every other request
// goes to the API server.
type failingResource struct {
	next    http.RoundTripper
	failing *atomic.Bool
}

func (f failingResource) RoundTrip(req *http.Request) (*http.Response, error) {
	if !f.failing.Load() || !strings.HasPrefix(req.URL.Path, "/apis/"+framework.NodeMaintenanceGroup+"/") {
		return f.next.RoundTrip(req)
	}
	const body = `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500,` +
		`"message":"conversion webhook for nodemaintenance.medik8s.io/v1beta1, Kind=NodeMaintenance failed: connection refused"}`
	return &http.Response{
		StatusCode: http.StatusInternalServerError, Status: "500 Internal Server Error", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}, nil
}

// A replica that cannot read the maintenance resource from its start (its every request answered
// 500, as a CRD conversion webhook that is down makes them) gets ready and leads all the same:
// node w, upgraded meanwhile, is released warm; node a, tainted for a NodeMaintenance, stays in
// maintenance although cancelAfter is 0s; node b, whose maintenance began meanwhile, is not
// entered. Once the resource reads again, b is entered.
func TestMaintenanceUnreadableFromStartUp(t *testing.T) {
	e := newEnv(t, func(cfg *config.Config) { cfg.CancelAfter = config.NewDuration(0) })
	e.PoolNode("a")
	e.PoolNode("b")
	e.PoolNode("w")
	e.Warmer()
	first := e.start("first", fastElection)
	e.Maintenance("a")
	e.Maintenance("w")
	e.waitPhase("a", state.PhaseTainted)
	e.waitPhase("w", state.PhaseTainted)
	first.stop(t)

	var failing atomic.Bool
	failing.Store(true)
	log := &tu.LogBuffer{}
	r := e.start("unreadable", fastElection, withLog(log), withTransport(func(next http.RoundTripper) http.RoundTripper {
		return failingResource{next: next, failing: &failing}
	}))
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		code, _ := r.get(t, "/readyz")
		return code == http.StatusOK, nil
	}), "ready although the maintenance resource cannot be read:\n%s", log.String())
	assert.Contains(t, log.String(), "probing the maintenance resource failed; no node is entered or leaves maintenance until a probe succeeds")

	e.Maintenance("b")
	e.Reboot("w", newKernel)
	e.waitReleased("w")
	e.RequireReleased("w", state.ReasonWarm)
	e.waitReconciles(r, reconcileCount(t, r), 2, "two plans after w's release")
	e.RequireUntouched("b")
	n := e.Node("a")
	assert.Equal(t, state.PhaseTainted, n.Annotations[state.Phase], "a is still in maintenance")
	assert.NotContains(t, n.Annotations, state.LeftMaintenanceAt)

	failing.Store(false)
	e.waitPhase("b", state.PhaseTainted)
	e.waitPhase("a", state.PhaseTainted)
}

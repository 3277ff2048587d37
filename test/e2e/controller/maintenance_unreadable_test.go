package controller_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

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

// breakingWatch passes the requests for the NodeMaintenance resource to failingResource, and ends
// a watch of it that is open when failing is set, at its next event: the read fails as a dropped
// connection does, and that event never reaches the informer.
type breakingWatch struct{ failingResource }

func (b breakingWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.failingResource.RoundTrip(req)
	if err != nil || req.URL.Query().Get("watch") != "true" || !strings.HasPrefix(req.URL.Path, "/apis/"+framework.NodeMaintenanceGroup+"/") {
		return resp, err
	}
	resp.Body = &breakingBody{ReadCloser: resp.Body, failing: b.failing}
	return resp, nil
}

type breakingBody struct {
	io.ReadCloser
	failing *atomic.Bool
}

func (b *breakingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.failing.Load() {
		return 0, errors.New("connection reset (test)")
	}
	return n, err
}

// After its informer has synced, the leader's reads of the maintenance resource start failing
// (every request answered 500): the cache keeps what it last read, and plans must not take it
// for the cluster. Node a is tainted for its NodeMaintenance and b's waits for the budget
// (maxConcurrent 1). b's object is deleted, an event the broken watch never delivers, and an
// operator opens a: the budget is free, yet b is not entered for the object the cache still
// holds, and no reconcile counts as a success. Once the resource reads again, b's maintenance is
// seen to be over, and b is never tainted.
func TestMaintenanceUnreadableAfterSync(t *testing.T) {
	e := newEnv(t, func(cfg *config.Config) { cfg.MaxConcurrent = intstr.FromInt32(1) })
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	e.Maintenance("a")
	var failing atomic.Bool
	log := &tu.LogBuffer{}
	r := e.start("stale", fastElection, withLog(log), withTransport(func(next http.RoundTripper) http.RoundTripper {
		return breakingWatch{failingResource{next: next, failing: &failing}}
	}))
	e.waitPhase("a", state.PhaseTainted)
	e.Maintenance("b")
	e.waitReconciles(r, reconcileCount(t, r), 2, "two plans with b's maintenance")
	e.RequireUntouched("b")

	failing.Store(true)
	e.EndMaintenance("b")
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return strings.Contains(log.String(), "reading the maintenance resource failed"), nil
	}), log.String())
	success, _ := sample(r.scrape(t), "image_prewarmer_last_success_timestamp_seconds", nil)

	// An operator opens a by hand.
	_, err := cluster.Client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("a"), types.JSONPatchType,
		[]byte(`[{"op":"test","path":"/spec/taints/0/key","value":"os-upgrade"},{"op":"remove","path":"/spec/taints/0"}]`), metav1.PatchOptions{})
	require.NoError(t, err)
	e.waitReleased("a")
	e.waitReconciles(r, reconcileCount(t, r), 3, "three plans after a's release")
	e.RequireUntouched("b")
	now, _ := sample(r.scrape(t), "image_prewarmer_last_success_timestamp_seconds", nil)
	assert.Equal(t, success, now, "no reconcile is a success while the source may be stale")

	failing.Store(false)
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return strings.Contains(log.String(), "maintenance resource reads again"), nil
	}), log.String())
	e.waitReconciles(r, reconcileCount(t, r), 2, "two plans once it reads")
	e.RequireUntouched("b")
	now, _ = sample(r.scrape(t), "image_prewarmer_last_success_timestamp_seconds", nil)
	assert.Greater(t, now, success)
}

package controller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// client.timeout bounds each API request, not the informers' watches. Applied as an http.Client
// timeout it would end every watch after client.timeout: each informer would re-open its watch
// that often (a GET each, six informers), and client-go log "unable to cancel request". With
// client.timeout 2s, an idle orchestrator makes no GET for several timeouts, and its watches (the
// resync is 10 minutes) still bring it a new NodeMaintenance and a node's reboot.
func TestClientTimeoutDoesNotCutWatches(t *testing.T) {
	const timeout = 2 * time.Second
	e := newEnv(t, func(cfg *config.Config) { cfg.Client.Timeout = config.NewDuration(timeout) })
	e.PoolNode("a")
	e.Warmer()
	// Without leader election: a Lease renewal that fails or outlasts client.timeout on a loaded
	// machine falls back to a GET of the Lease, which the count below would take for a watch.
	p := e.startProcess("orchestrator-0", "--resync", "10m", "--leader-elect=false")
	e.waitReady(p)

	gets := func() float64 {
		var n float64
		for _, m := range p.scrape(t)["image_prewarmer_api_requests_total"].GetMetric() {
			if labelValue(m, "verb") == "GET" {
				n += m.GetCounter().GetValue()
			}
		}
		return n
	}
	// Start-up done (informers' lists, the first reconcile, the live ControllerRevisions): the
	// GET count holds over two client.timeouts.
	before := waitSteady(t, e.Ctx, 2*timeout, 60*time.Second, "the GET count after start-up", gets)
	require.Positive(t, before, "the informers' lists and watches are counted")
	time.Sleep(5 * timeout)
	assert.Equal(t, before, gets(), "no GET while idle for 5 x client.timeout: no watch was re-opened")
	assert.Zero(t, strings.Count(p.log(), "unable to cancel request"), "log lines \"unable to cancel request\": no watch was cut")
	p.requireHealthy(t)

	// The watches still deliver: the NodeMaintenance informer's (dynamic client), then the
	// nodes' and the warmer pods'.
	e.Maintenance("a")
	e.waitPhase("a", state.PhaseTainted)
	e.Reboot("a", newKernel)
	e.waitReleased("a")
	e.RequireReleased("a", state.ReasonWarm)
	assert.Zero(t, strings.Count(p.log(), "unable to cancel request"), "log lines \"unable to cancel request\"")
	assert.Empty(t, p.errorLines(), "no error is logged")
}

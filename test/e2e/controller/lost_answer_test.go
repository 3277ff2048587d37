package controller_test

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The API server applies a patch but its answer is lost (the connection drops before the
// response), in the event-driven mode: for each node, the answer to its entry (a merge patch)
// and to its release (a JSON patch). The engine re-reads the node and finds each write done:
// every node goes through its upgrade and is released warm, with one Tainted and one Released
// Event each, and each transition counted once in the replica's metrics.
func TestLostAnswersInEventMode(t *testing.T) {
	e := newEnv(t)
	names := []string{"a", "b"}
	for _, s := range names {
		e.PoolNode(s)
	}
	e.Warmer()

	var mu sync.Mutex
	dropped := map[string]bool{} // "node content-type"
	lossy := func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil || req.Method != http.MethodPatch || !strings.HasPrefix(req.URL.Path, "/api/v1/nodes/") ||
				resp.StatusCode != http.StatusOK {
				return resp, err
			}
			mu.Lock()
			defer mu.Unlock()
			key := path.Base(req.URL.Path) + " " + req.Header.Get("Content-Type")
			if dropped[key] {
				return resp, nil
			}
			dropped[key] = true
			_ = resp.Body.Close()
			return nil, errors.New("injected: connection lost before the response")
		})
	}
	r := e.start("only", fastElection, withTransport(lossy))

	for _, s := range names {
		e.Maintenance(s)
	}
	for _, s := range names {
		e.waitPhase(s, state.PhaseTainted)
		e.Reboot(s, newKernel)
	}
	for _, s := range names {
		e.waitReleased(s)
	}

	for _, s := range names {
		e.RequireReleased(s, state.ReasonWarm)
		mu.Lock()
		for _, pt := range []types.PatchType{types.MergePatchType, types.JSONPatchType} {
			require.True(t, dropped[e.NodeName(s)+" "+string(pt)], "the answer to a %s of %s was lost", pt, s)
		}
		mu.Unlock()
	}
	// Events are sent after the patch, and the metrics counted after the re-read: both may
	// trail the node's release by a moment.
	counted := func() bool {
		mf := r.scrape(t)
		for _, c := range []struct{ typ, reason string }{{"enter", "nodeMaintenance"}, {"release", state.ReasonWarm}} {
			v, _ := sample(mf, "image_prewarmer_transitions_total", map[string]string{"type": c.typ, "reason": c.reason})
			if v != float64(len(names)) {
				t.Logf("transitions_total{type=%q,reason=%q} = %v", c.typ, c.reason, v)
				return false
			}
		}
		for _, s := range names {
			if len(e.Events(s, "PrewarmTainted")) != 1 || len(e.Events(s, "PrewarmReleased")) != 1 {
				t.Logf("%s: Tainted %d, Released %d Events", s, len(e.Events(s, "PrewarmTainted")), len(e.Events(s, "PrewarmReleased")))
				return false
			}
		}
		return true
	}
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) { return counted(), nil }),
		"each entry and release counted once in transitions_total, with one Event each")
	e.waitReconciles(r, reconcileCount(t, r), 2, "two more reconciles (resyncs)")
	assert.True(t, counted(), "and no more two reconciles later")
}

// roundTripperFunc is a function used as an http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

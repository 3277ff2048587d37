package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Putting back a removed status label never holds back a release: a node whose warmer pod is
// Ready, or whose timeout passed, is released whether or not the label is there.
func TestRestoredStatusLabelDoesNotHoldBackReleases(t *testing.T) {
	cfg := testConfig(t)
	for _, tc := range []struct {
		name   string
		now    time.Time
		pods   []*corev1.Pod
		reason string
	}{
		{"warmer pod Ready", t0, []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())}, state.ReasonWarm},
		{"maxWaitForWarm passed", t0.Add(3 * time.Hour), nil, state.ReasonTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
			repairs := 0
			released := false
			for cycle := 0; cycle < 5 && !released; cycle++ {
				delete(n.Labels, labelKey) // removed again since the last cycle
				got := compute(t, cfg, snapshot(tc.now.Add(time.Duration(cycle)*5*time.Minute), []*corev1.Node{n}, nil, tc.pods...))
				require.Len(t, got.Actions, 1)
				a := got.Actions[0]
				switch {
				case a.Type == plan.Release:
					released = true
					assert.Equal(t, tc.reason, a.Reason)
				case a.Reason == "repaired":
					repairs++
					n = n.DeepCopy()
					n.Labels[labelKey] = *a.Change.Labels[labelKey]
				}
			}
			assert.True(t, released, "never released after %d repairs of the status label", repairs)
		})
	}
}

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

// A warmer pod problem becomes a Warning Event once per node and reason (design.md rule 7), also
// for a pod with two failing containers, one of them crash-looping (Running now and then, so
// its problem comes and goes while the other one's stays).
func TestPodProblemEventOncePerReason(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	crashing := tu.Pod(ds, "a", "new",
		tu.Waiting("warm-0", "example.com/a:1", "CrashLoopBackOff", "back-off restarting failed container"),
		tu.Waiting("warm-1", "example.com/b:1", "ImagePullBackOff", "Back-off pulling image"))
	running := tu.Pod(ds, "a", "new", // warm-0 restarted and runs for a moment
		func(p *corev1.Pod) {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "warm-0", Image: "example.com/a:1",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
		},
		tu.Waiting("warm-1", "example.com/b:1", "ImagePullBackOff", "Back-off pulling image"))

	events := map[string]int{}
	for i, pod := range []*corev1.Pod{crashing, running, crashing, running} {
		got := compute(t, cfg, snapshot(t0.Add(time.Duration(i)*time.Minute), []*corev1.Node{n}, nil, pod))
		for _, a := range got.Actions {
			require.Equal(t, plan.Record, a.Type)
			for _, ev := range a.Events {
				events[ev.Reason]++
			}
			// The write succeeds: the next cycle sees last-error.
			n = n.DeepCopy()
			n.Annotations[state.LastError] = *a.Change.Annotations[state.LastError]
		}
	}
	assert.Equal(t, map[string]int{"PrewarmCrashLoopBackOff": 1, "PrewarmImagePull": 1}, events,
		"each problem of the node reported once")
}

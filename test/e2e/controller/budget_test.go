package controller_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// maxConcurrent holds in the event-driven mode, where each node is planned on its own as its
// events arrive and the informers' cache lags behind the replica's own writes: with eight nodes
// entering maintenance at once and a budget of two, a watcher that sees every version of every
// node never sees more than two of them tainted or warming at a time; as each is upgraded and
// released the next enters, until all eight are released warm, each tainted once.
func TestBudgetInEventMode(t *testing.T) {
	const budget, nodes = 2, 8
	e := newEnv(t, func(c *config.Config) { c.MaxConcurrent = intstr.FromInt32(budget) })
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("b%d", i)
		e.PoolNode(names[i])
	}
	e.Warmer()

	// Every version of every pool node, from before the first maintenance on.
	list, err := e.client.CoreV1().Nodes().List(e.Ctx, metav1.ListOptions{LabelSelector: e.Config.PoolSelector().String()})
	require.NoError(t, err)
	w, err := e.client.CoreV1().Nodes().Watch(e.Ctx, metav1.ListOptions{LabelSelector: e.Config.PoolSelector().String(), ResourceVersion: list.ResourceVersion})
	require.NoError(t, err)
	defer w.Stop()
	var (
		mu      sync.Mutex
		managed = map[string]bool{}
		most    int
		seen    []string // the managed set whenever it reached most
	)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			managed[n.Name] = state.PhaseOf(n) != ""
			count := 0
			var now []string
			for name, m := range managed {
				if m {
					count++
					now = append(now, name)
				}
			}
			if count > most {
				most, seen = count, now
			}
			mu.Unlock()
		}
	}()

	r := e.start("replica-1", fastElection)
	defer r.stop(t)
	for _, s := range names {
		e.Maintenance(s)
	}
	// The pipeline reboots each node once it is tainted, as a budgeted rollout's would.
	rebooted := map[string]bool{}
	require.NoError(t, framework.Eventually(e.Ctx, 3*time.Minute, func(context.Context) (bool, error) {
		released := 0
		for _, s := range names {
			n := e.Node(s)
			if state.PhaseOf(n) == state.PhaseTainted && !rebooted[s] {
				e.Reboot(s, newKernel)
				rebooted[s] = true
			}
			if n.Annotations[state.ReleaseReason] != "" {
				released++
			}
		}
		if released < nodes {
			return false, fmt.Errorf("%d of %d nodes released", released, nodes)
		}
		return true, nil
	}))
	w.Stop()
	<-watched

	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, most, budget, "nodes tainted or warming at once, at most: %v", seen)
	assert.Equal(t, budget, most, "the budget was used: %v", seen)
	for _, s := range names {
		e.RequireReleased(s, state.ReasonWarm)
		assert.Len(t, e.Events(s, "PrewarmTainted"), 1, "%s tainted once", s)
	}
}

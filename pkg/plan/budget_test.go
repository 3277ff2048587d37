package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// maxConcurrent counts tainted + warming nodes (design.md rule 1), and an adoption makes a node
// warming (rule 2): it counts against the entries of the same plan.
func TestAdoptionCountsAgainstBudgetInTheSamePlan(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.MaxConcurrent = intstr.FromInt32(1) })
	joined := tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))
	candidate := tu.Node("a", inPool())
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{joined, candidate}, map[string][]plan.Maintenance{"a": nm("a")}))

	// Nodes that join with the taint are always adopted; the entry waits for a slot.
	assert.Equal(t, []want{{"j", plan.Adopt, "joined-tainted"}}, summarize(got))
	waiting := notesOf(got, "a")
	require.Len(t, waiting, 1)
	assert.Contains(t, waiting[0].Message, "maxConcurrent (1)")
}

// A plan says how many of its entries only its releases made room for: those wait for the
// releases when it is applied.
func TestEntriesOnReleases(t *testing.T) {
	warm := func(name string) *corev1.Node {
		return tu.Node(name, inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	}
	for _, tc := range []struct {
		name    string
		budget  intstr.IntOrString
		entered int
		want    int
	}{
		{"full: the entry takes the released slot", intstr.FromInt32(2), 1, 1},
		{"one slot free, one released: two entries, one on the release", intstr.FromInt32(3), 2, 1},
		{"room without the release", intstr.FromInt32(5), 3, 0},
		{"no limit", intstr.FromInt32(0), 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, func(c *config.Config) { c.MaxConcurrent = tc.budget })
			nodes := []*corev1.Node{warm("a"), warm("b"), tu.Node("x", inPool()), tu.Node("y", inPool()), tu.Node("z", inPool())}
			maint := map[string][]plan.Maintenance{"x": nm("x"), "y": nm("y"), "z": nm("z")}
			got := compute(t, cfg, snapshot(t0, nodes, maint, tu.Pod(ds, "a", "new", tu.Ready())))
			entered := 0
			for _, a := range got.Actions {
				if a.Type == plan.Enter {
					entered++
				}
			}
			assert.Equal(t, tc.entered, entered, "%+v", summarize(got))
			assert.Equal(t, tc.want, got.EntriesOnReleases)
		})
	}
}

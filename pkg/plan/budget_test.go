package plan_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// maxConcurrent counts tainted + warming nodes (design.md rule 1), and an adoption makes a node
// warming (rule 2): it counts against the entries of the same plan.
func TestAdoptionCountsAgainstBudgetInTheSamePlan(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.MaxConcurrent = intstr.FromInt32(1) })
	joined := tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))
	candidate := tu.Node("a", inPool())
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{joined, candidate}, map[string][]plan.Maintenance{"a": nm("a")}))

	active := 0
	for _, a := range got.Actions {
		if a.Type == plan.Adopt || a.Type == plan.Enter {
			active++
		}
	}
	assert.LessOrEqual(t, active, 1, "maxConcurrent 1, but the plan is %+v", summarize(got))
}

package plan_test

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// BenchmarkCompute measures one planning pass over pools of 1,000 and 5,000 nodes with 10% in
// maintenance, 5% tainted and 5% warming (half of those with a Ready warmer pod).
func BenchmarkCompute(b *testing.B) {
	for _, size := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			cfg := testConfig(b)
			p, err := plan.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			var nodes []*corev1.Node
			var pods []*corev1.Pod
			maint := map[string][]plan.Maintenance{}
			for i := range size {
				name := fmt.Sprintf("node-%05d", i)
				opts := []tu.NodeOption{inPool()}
				switch {
				case i%20 == 0:
					opts = append(opts, managed(state.PhaseTainted, t0.Add(-time.Hour)))
					maint[name] = nm(name)
				case i%20 == 1:
					opts = append(opts, managed(state.PhaseWarming, t0.Add(-time.Hour)))
					if i%40 == 1 {
						pods = append(pods, tu.Pod(ds, name, "new", tu.Ready()))
					}
				case i%10 == 2:
					maint[name] = nm(name)
				}
				nodes = append(nodes, tu.Node(name, opts...))
			}
			s := snapshot(t0, nodes, maint, pods...)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_ = p.Compute(s)
			}
		})
	}
}

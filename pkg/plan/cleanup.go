package plan

import (
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// Cleanup returns the actions that release every node this installation manages (reason
// cleanup): taint, status label and managed annotations off. It is what an uninstall runs.
func (p *Planner) Cleanup(s Snapshot) Plan {
	c := p.newCycle(s)
	var out Plan
	for _, n := range sortedByName(s.Nodes) {
		if !p.Owns(n) {
			continue
		}
		a := p.release(c, n, state.ReasonCleanup, fmt.Sprintf("installation %s is being removed", p.cfg.Instance))
		out.Actions = append(out.Actions, a)
	}
	return out
}

// sortedByName returns the nodes sorted by name.
func sortedByName(nodes []*corev1.Node) []*corev1.Node {
	out := slices.Clone(nodes)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

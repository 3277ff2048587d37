package plan

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// Cleanup returns the actions that release every node this installation manages (reason
// cleanup): taint, status label and managed annotations off; when uninstalling (or the
// installation adopts nothing any more: its DaemonSet is marked or gone), also the pool nodes that
// joined with the taint and wait for their adoption, each once. uninstall says why, for the
// message: the installation is being uninstalled (`cleanup --uninstall`, the chart's
// pre-delete hook), or released by hand (`cleanup`). The message of a release by hand says
// whether the installation may taint the node again, as the snapshot's warmer DaemonSet tells:
// it does at the node's next maintenance while its DaemonSet exists, unmarked; not while the
// DaemonSet carries the uninstall mark; and not while the DaemonSet does not exist (the release
// was uninstalled and cleanup runs with its saved configuration, or the DaemonSet was deleted).
func (p *Planner) Cleanup(s Snapshot, uninstall bool) Plan {
	c := p.newCycle(s)
	ds := p.cfg.Warmer.Namespace + "/" + p.cfg.Warmer.DaemonSetName
	var msg string
	switch {
	case uninstall:
		msg = fmt.Sprintf("installation %s is being uninstalled", p.cfg.Instance)
	case c.uninstalling && c.warmerDeleting:
		msg = fmt.Sprintf("released by cleanup; installation %s is being uninstalled (DaemonSet %s has %s and is being deleted) and taints no node again",
			p.cfg.Instance, ds, state.Uninstalling)
	case c.uninstalling:
		msg = fmt.Sprintf("released by cleanup; installation %s is marked as being uninstalled (DaemonSet %s has %s) and taints no node until the mark is removed",
			p.cfg.Instance, ds, state.Uninstalling)
	case c.warmerMissing:
		msg = fmt.Sprintf("released by cleanup; installation %s has no DaemonSet %s (uninstalled, or deleted) and taints no node until it exists again", p.cfg.Instance, ds)
	default:
		msg = fmt.Sprintf("released by cleanup; installation %s stays installed and taints the node again at its next maintenance", p.cfg.Instance)
	}
	var out Plan
	var others []*corev1.Node
	for _, n := range sortedByName(s.Nodes) {
		if (uninstall || c.warmerMissing || c.uninstalling) && p.joinedTainted(n) && n.Annotations[state.ReleaseReason] != state.ReasonCleanup {
			// Joined with the taint and not adopted yet (between two CronJob runs): the
			// installation would have adopted and released it, and once it is uninstalled (or
			// being uninstalled, or its DaemonSet is gone) nothing will; it is released as if it
			// had been. Once: a taint that a node pool's configuration puts back (AKS
			// --node-taints) would otherwise keep every sweep of the uninstall busy.
			out.Actions = append(out.Actions, p.release(c, n, state.ReasonCleanup, msg+"; the node joined with its taint and was not adopted yet"))
			continue
		}
		if !p.Owns(n) {
			// Only nodes of this installation's pool: another installation may have a pool of its
			// own in the same cluster (with the same status label).
			phase := state.PhaseOf(n)
			if phase == "" || !p.InPool(n) {
				continue
			}
			if _, ok := ownerRecord(n); !ok {
				// Nobody's (its owner annotation missing, empty or malformed): no installation
				// releases it, not even an uninstall, so a cleanup says so, as each cycle does (an
				// uninstall once over its sweeps).
				out.Notes = append(out.Notes, p.notOurs(n, phase))
			} else {
				others = append(others, n)
			}
			continue
		}
		a := p.release(c, n, state.ReasonCleanup, msg)
		out.Actions = append(out.Actions, a)
	}
	if len(others) > 0 && !uninstall {
		// A cleanup run by hand with a configuration whose instance is not the installation's
		// (written by hand, not copied from the chart's ConfigMap) would release nothing, silently.
		out.Notes = append(out.Notes, Note{Warning: true, Message: fmt.Sprintf(
			"skipped: %d managed node(s) of another installation than %s (owner annotation %s): %s; set instance in the configuration to the installation whose nodes to release",
			len(others), p.cfg.Instance, owners(others), nameList(others))})
	}
	return out
}

// joinedTainted reports whether n is a pool node with no phase that carries the configured
// taint: one that joined with it, which the next cycle would adopt (planUnmanaged).
func (p *Planner) joinedTainted(n *corev1.Node) bool {
	return state.PhaseOf(n) == "" && p.InPool(n) && state.HasTaint(n, p.cfg.Taint.Key, p.cfg.Taint.Effect)
}

// owners lists the distinct owner annotations of nodes, sorted.
func owners(nodes []*corev1.Node) string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Annotations[state.Owner])
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ", ")
}

// sortedByName returns the nodes sorted by name.
func sortedByName(nodes []*corev1.Node) []*corev1.Node {
	out := slices.Clone(nodes)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

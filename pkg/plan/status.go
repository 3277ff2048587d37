package plan

import (
	"cmp"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/pkg/upgrade"
)

// NodeStatus is what `status` shows for one node.
type NodeStatus struct {
	Name string `json:"name"`
	// Phase is tainted, warming, released, joining (carries the taint, adopted at the next
	// cycle), waiting (a pool node in maintenance, with no phase and not released for that
	// maintenance: most often no cycle has run since it entered maintenance, up to one schedule
	// period in CronJob mode; otherwise held back by the budget, a missing warmer DaemonSet, an
	// uninstall, or an upgrade the rule could not detect: Rule.Detectable), deleting (a pool node
	// being deleted that would otherwise be joining or waiting: neither is taken), foreign (managed by
	// another installation, or with an owner record that names none: LastProblem then says so),
	// unknown (ours, with a phase annotation the planner does not know: LastProblem quotes it), or
	// "" for an idle pool node.
	Phase string `json:"phase"`
	// Since is when the node entered its phase (zero when unknown).
	Since          time.Time `json:"since,omitzero"`
	Kernel         string    `json:"kernel"`
	BaselineKernel string    `json:"baselineKernel,omitempty"`
	Maintenance    string    `json:"maintenance,omitempty"`
	// Warmer is the state of the warmer pod on the node: none, pending, ready, ready (old
	// revision), ready (pre-existing), ready (earlier node: a pod of an earlier node of the same
	// name, Ready since before this one was created), or a problem category such as ImagePull.
	Warmer        string `json:"warmer"`
	LastProblem   string `json:"lastProblem,omitempty"`
	ReleaseReason string `json:"releaseReason,omitempty"`
	// Owner is the installation (<namespace>/<release>) that manages a foreign node; "" when its
	// owner record names none (LastProblem then says so), and for every other phase.
	Owner  string `json:"owner,omitempty"`
	InPool bool   `json:"inPool"`
	// TaintRemoved: a tainted or warming node of this installation, in the pool, no longer
	// carries its taint (removed by hand): it is open already, and the next cycle releases it
	// (external).
	TaintRemoved bool `json:"taintRemoved,omitempty"`
}

// Status is the pool at a glance.
type Status struct {
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	// Uninstalling is the value of the uninstall mark on the warmer DaemonSet (when it was set):
	// while it is there nothing is tainted or adopted.
	Uninstalling string `json:"uninstalling,omitempty"`
	// WarmerMissing names the warmer DaemonSet (namespace/name) when it does not exist, or is
	// being deleted, and the installation is not being uninstalled (Uninstalling says that): no
	// node is tainted for maintenance then, and none can become warm but on the Ready pods a
	// DaemonSet being deleted still has.
	WarmerMissing string `json:"warmerMissing,omitempty"`
	// WarmerDeleting: the warmer DaemonSet named by WarmerMissing exists but is being deleted
	// (it creates no more pods), which counts as missing.
	WarmerDeleting bool `json:"warmerDeleting,omitempty"`
	// EmptyPool is the pool selector when no node matches it: there is nothing to pre-warm.
	EmptyPool string         `json:"emptyPool,omitempty"`
	Nodes     []NodeStatus   `json:"nodes"`
	Totals    map[string]int `json:"totals"`
	// Problems counts the managed nodes by the reason of the problem their last-error records
	// (RecordedProblem), as the image_prewarmer_node_problems gauge does.
	Problems map[string]int `json:"problems,omitempty"`
	// SourceWarnings are what the maintenance sources could not read or skipped (a resource not
	// served, an object without a node name), as `run` logs them: most often why no node is in
	// maintenance. Describe leaves them to its caller, which reads the sources.
	SourceWarnings []SourceWarning `json:"sourceWarnings,omitempty"`
}

// SourceWarning is one thing a maintenance source could not read or skipped.
type SourceWarning struct {
	Source string `json:"source"`
	// Object names the maintenance object skipped; "" for a warning about the whole source.
	Object  string `json:"object,omitempty"`
	Message string `json:"message"`
}

// Describe summarises a snapshot for humans. With all, every pool node is listed; otherwise only
// nodes with something to show (managed, in maintenance, or released).
func (p *Planner) Describe(s Snapshot, all bool) Status {
	c := p.newCycle(s)
	st := Status{Time: s.Now, Instance: p.cfg.Instance, Totals: map[string]int{}}
	if s.DaemonSet != nil {
		if at, marked := s.DaemonSet.Annotations[state.Uninstalling]; marked {
			// The mark stops the installation whatever its value (the planner reads the key).
			st.Uninstalling = cmp.Or(at, "(no time recorded)")
		}
	}
	if c.warmerMissing && !c.uninstalling { // the uninstall mark says it all
		st.WarmerMissing = p.cfg.Warmer.Namespace + "/" + p.cfg.Warmer.DaemonSetName
		st.WarmerDeleting = c.warmerDeleting
	}
	if c.poolSize == 0 {
		st.EmptyPool = p.pool.String()
	}
	for _, n := range sortedByName(s.Nodes) {
		ns := NodeStatus{
			Name:           n.Name,
			Kernel:         p.rule.KernelAgainst(n, upgrade.Baseline{KernelSource: n.Annotations[state.BaselineKernelSource]}),
			BaselineKernel: n.Annotations[state.BaselineKernel],
			LastProblem:    n.Annotations[state.LastError],
			Warmer:         p.warmerState(c, n),
			InPool:         p.InPool(n),
		}
		if ms := s.Maintenance[n.Name]; len(ms) > 0 {
			ns.Maintenance = describe(primary(ms))
		}
		switch phase := state.PhaseOf(n); {
		case phase != "" && p.Owns(n) && phase != state.PhaseTainted && phase != state.PhaseWarming:
			// A phase the planner does not know (set by hand): it leaves the node alone, tainted,
			// and no timeout releases it. Not shown as the phase it names, which may be one of
			// status's own ("released") or a total's.
			ns.Phase = "unknown"
			ns.LastProblem = fmt.Sprintf("unknown phase %s: left alone, tainted, until the annotation is fixed (tainted or warming) or removed", quote(phase))
			// Counted as node_problems counts it (Engine.Count): its own record, else other.
			if st.Problems == nil {
				st.Problems = map[string]int{}
			}
			st.Problems[cmp.Or(RecordedProblem(n), ProblemOther)]++
		case phase != "" && p.Owns(n):
			ns.Phase = phase
			if ours := p.ourTaint(n); ns.InPool && !state.HasTaint(n, ours.Key, ours.Effect) {
				// Opened by hand (the documented lever): the next cycle releases it (external).
				ns.TaintRemoved = true
			}
			if r := RecordedProblem(n); r != "" {
				if st.Problems == nil {
					st.Problems = map[string]int{}
				}
				st.Problems[r]++
			}
			key := state.TaintedAt
			if phase == state.PhaseWarming {
				key = state.UpgradedAt
			}
			var ok bool
			if ns.Since, ok = recordedTime(c, n, key); !ok && ns.LastProblem == "" {
				// A cycle repairs it (PrewarmStateRepaired), and its timeout counts from then.
				ns.LastProblem = fmt.Sprintf("%s is %s: a cycle sets it to now (PrewarmStateRepaired)", key, timeProblem(n, key))
			}
		case phase != "":
			ns.Phase = "foreign"
			if problem, ok := ownerRecord(n); ok {
				ns.Owner = n.Annotations[state.Owner]
			} else {
				// Nobody's: no installation releases it (the plan's WARN note says how to fix it).
				ns.LastProblem = fmt.Sprintf("no installation manages this node or removes its taint: owner annotation %s (phase %s)", problem, quote(phase))
			}
		case ns.InPool && n.DeletionTimestamp != nil &&
			(state.HasTaint(n, p.cfg.Taint.Key, p.cfg.Taint.Effect) || (ns.Maintenance != "" && !p.releasedFor(n, s.Maintenance[n.Name]))):
			// Neither adopted nor entered while it is being deleted (Compute leaves it alone).
			ns.Phase = "deleting"
		case ns.InPool && state.HasTaint(n, p.cfg.Taint.Key, p.cfg.Taint.Effect):
			// Joined with the taint: the next cycle adopts it (a CronJob may be a schedule away).
			ns.Phase = "joining"
		case ns.Maintenance != "" && ns.InPool && !p.releasedFor(n, s.Maintenance[n.Name]):
			ns.Phase = "waiting"
			if !p.rule.Detectable(n) && ns.LastProblem == "" {
				// Not a wait for the next cycle: it is never tainted (the plan's WARN note).
				ns.LastProblem = p.undetectable(n).Message
			}
		case n.Annotations[state.ReleaseReason] != "":
			ns.Phase = "released"
			ns.ReleaseReason = n.Annotations[state.ReleaseReason]
			ns.Since, _ = state.Time(n, state.ReleasedAt)
		}
		if ns.InPool {
			st.Totals["pool"]++
		}
		if ns.Maintenance != "" {
			st.Totals["inMaintenance"]++
		}
		if ns.Phase != "" {
			st.Totals[ns.Phase]++
		}
		if ns.Phase == "" && !all {
			continue
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

func (p *Planner) warmerState(c *cycle, n *corev1.Node) string {
	pods := c.pods[n.Name]
	if len(pods) == 0 {
		return "none"
	}
	if p.warmPod(c, n) != nil {
		return "ready"
	}
	if reason, _ := PodProblem(c.problemPods(n)); reason != "" {
		return reason
	}
	for _, pod := range pods {
		if !state.PodReady(pod) || pod.DeletionTimestamp != nil {
			continue
		}
		if pod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != c.revision {
			return "ready (old revision)"
		}
		if !readyOnThisNode(pod, n) {
			return "ready (earlier node)"
		}
		if string(pod.UID) == n.Annotations[state.WarmerPodUID] {
			return "ready (pre-existing)"
		}
	}
	return "pending"
}

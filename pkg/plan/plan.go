// Package plan is the pure heart of image-prewarmer: from one Snapshot of the cluster it computes
// the Actions that move each node through its lifecycle (design.md, "Node lifecycle").
//
// It does no I/O, keeps no clock of its own and logs nothing: the same snapshot always gives the
// same plan, which is what makes --dry-run exact and every transition testable with a table.
package plan

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/pkg/upgrade"
)

// Maintenance sources.
const (
	SourceNodeMaintenance = "nodeMaintenance"
	SourceNodeLabel       = "nodeLabel"
	SourceCordoned        = "cordoned"
)

// Maintenance is one active maintenance of a node.
type Maintenance struct {
	// Source is SourceNodeMaintenance, SourceNodeLabel or SourceCordoned.
	Source string
	// ID is the maintenance's identity: the object's UID for nodeMaintenance, the source's name
	// for nodeLabel and cordoned (whose identity is the node's unbroken presence in the set).
	ID string
	// Object names the maintenance object, for messages ("" for presence sources).
	Object string
	// Created is when the maintenance object was created, by the API server's clock (zero for
	// presence sources): a warm release counts a NodeMaintenance created before the node's
	// upgrade was seen as one that upgrade was for, even if it was not recorded then (see
	// upgradedFor).
	Created time.Time
}

// Snapshot is everything one cycle knows.
type Snapshot struct {
	// Nodes are the pool's nodes and the nodes carrying the status label, each once.
	Nodes []*corev1.Node
	// Maintenance maps a node name to its active maintenances.
	Maintenance map[string][]Maintenance
	// DaemonSet is the warmer DaemonSet, nil when it does not exist. Nil means "known to be
	// missing" (no node is then tainted for maintenance): an observer that could not read it
	// fails, or plans nothing, rather than leave it nil.
	DaemonSet *appsv1.DaemonSet
	// Revisions are the DaemonSet's ControllerRevisions.
	Revisions []*appsv1.ControllerRevision
	// Pods are the warmer pods (any that may belong to the DaemonSet).
	Pods []*corev1.Pod
	// Now is the cycle's time.
	Now time.Time
	// MaintenanceUnknown names a maintenance source whose objects could not be read (the
	// event-driven mode while its informer syncs, or while its probe fails); "" when every
	// source is known. Maintenance then lacks that source's maintenances, so nothing that rests
	// on a node's maintenance is decided: no entry, no left-maintenance record or cancel, and a
	// release leaves the NodeMaintenance objects recorded on the node as they are. The presence
	// sources, read from the nodes themselves, are recorded as they are. Adoptions, releases of
	// warm nodes and the timeouts go on.
	MaintenanceUnknown string
}

// ActionType is what an action does to a node.
type ActionType string

// Action types.
const (
	Enter    ActionType = "enter"    // taint, label, record the baseline
	Adopt    ActionType = "adopt"    // a node that joined with our taint becomes warming
	Upgraded ActionType = "upgraded" // upgrade seen: tainted -> warming
	Release  ActionType = "release"  // taint and label off, record kept
	Record   ActionType = "record"   // bookkeeping annotations only (left maintenance, last error)
)

// Action is one patch to one node, with the Events that explain it.
type Action struct {
	Node string
	Type ActionType
	// Reason is the release reason for Release actions, otherwise a short word.
	Reason string
	// Message says why, for logs and --dry-run.
	Message string
	Change  Change
	Events  []Event
	// WarmPod is the warmer pod that proved the node warm (Release with reason warm only); the
	// engine reads its Ready time for the warm-to-release latency metric.
	WarmPod *corev1.Pod
}

// Change is what an action changes on a node. Nil map values remove the key.
type Change struct {
	// AddTaint adds this taint when no taint with its key and effect is present.
	AddTaint *corev1.Taint
	// RemoveTaint removes taints with this key and effect.
	RemoveTaint *corev1.Taint
	Labels      map[string]*string
	Annotations map[string]*string
}

// Event is a Kubernetes Event about a node.
type Event struct {
	Type    string // corev1.EventTypeNormal or corev1.EventTypeWarning
	Reason  string
	Message string
}

// Note is something the planner skipped or could not decide, for the log.
type Note struct {
	// Node is the node the note is about; "" for a note about the whole pool.
	Node    string
	Message string
	// Warning marks a note that needs an operator (logged at WARN): the product is not doing its
	// job, such as while the warmer DaemonSet is missing.
	Warning bool
}

// Warning reports whether the action reports a problem: it carries a Warning Event (a warmer pod
// problem, a timeout, an upgrade rule error, a repaired annotation). Such actions are logged at
// WARN; the routine transitions at INFO.
func (a Action) Warning() bool {
	for _, ev := range a.Events {
		if ev.Type == corev1.EventTypeWarning {
			return true
		}
	}
	return false
}

// Plan is the outcome of one computation.
type Plan struct {
	Actions []Action
	Notes   []Note
	// EntriesOnReleases is how many of the entries maxConcurrent admitted only because releases of
	// the same plan free their nodes' slots: if those releases fail, as many entries must wait.
	EntriesOnReleases int
}

// Planner computes plans for one configuration.
type Planner struct {
	cfg  *config.Config
	rule *upgrade.Rule
	pool labels.Selector
	// otherKeys are the node label keys the configuration reads other than the status label's.
	otherKeys map[string]bool
}

// New returns a planner for a validated configuration.
func New(cfg *config.Config) (*Planner, error) {
	rule, err := upgrade.NewRule(cfg.Upgrade.KernelVersions, cfg.Upgrade.KernelVersionLabel, cfg.Upgrade.When)
	if err != nil {
		return nil, fmt.Errorf("upgrade.when: %w", err)
	}
	other := cfg.ReadLabelKeys()
	delete(other, cfg.StatusLabel.Key)
	return &Planner{cfg: cfg, rule: rule, pool: cfg.PoolSelector(), otherKeys: other}, nil
}

// Rule returns the planner's upgrade rule.
func (p *Planner) Rule() *upgrade.Rule { return p.rule }

// InPool reports whether node matches the pool selector.
func (p *Planner) InPool(node *corev1.Node) bool { return p.pool.Matches(labels.Set(node.Labels)) }

// Owns reports whether node is managed (has a phase) by this installation.
func (p *Planner) Owns(node *corev1.Node) bool {
	return state.PhaseOf(node) != "" && node.Annotations[state.Owner] == p.cfg.Instance
}

// RecordsNodeMaintenance reports whether a node this installation manages records a
// nodeMaintenance object in maintenance-id: with that source read as empty, the node would be
// taken out of maintenance.
func (p *Planner) RecordsNodeMaintenance(nodes []*corev1.Node) bool {
	return slices.ContainsFunc(nodes, func(n *corev1.Node) bool {
		return p.Owns(n) && slices.ContainsFunc(recordedIDs(n), func(id string) bool { return !isPresenceID(id) })
	})
}

// TakesASlot reports whether the node counts against maxConcurrent: this installation's, tainted
// or warming.
func (p *Planner) TakesASlot(node *corev1.Node) bool {
	ph := state.PhaseOf(node)
	return p.Owns(node) && (ph == state.PhaseTainted || ph == state.PhaseWarming)
}

// Compute returns the actions that move every node of the snapshot one step on.
func (p *Planner) Compute(s Snapshot) Plan {
	c := p.newCycle(s)
	var out Plan
	nodes := sortedByName(s.Nodes)

	// Every node in name order; entry candidates wait until the loop is done, so that the
	// releases of this cycle free budget for them.
	var candidates []*corev1.Node
	freed := 0
	for _, n := range nodes {
		switch phase := state.PhaseOf(n); {
		case phase == "":
			a, candidate := p.planUnmanaged(c, n)
			if candidate {
				candidates = append(candidates, n)
			} else if a != nil {
				out.Actions = append(out.Actions, *a)
				if a.Type == Adopt {
					// Warming from now on: it counts against maxConcurrent for this plan's entries.
					c.active++
				}
			}
		case n.Annotations[state.Owner] != p.cfg.Instance:
			out.Notes = append(out.Notes, p.notOurs(n, phase))
		case phase != state.PhaseTainted && phase != state.PhaseWarming:
			// Nothing releases such a node (no timeout applies to a phase we do not know): only
			// an operator, by fixing the annotation or with cleanup.
			out.Notes = append(out.Notes, Note{Node: n.Name, Warning: true, Message: fmt.Sprintf(
				"skipped: unknown phase %s; no timeout applies to it: fix the %s annotation or release the node with cleanup", quote(phase), state.Phase)})
		default:
			a, ok := p.planManaged(c, n)
			if !ok {
				if note, odd := p.oddStatusValue(n); odd {
					out.Notes = append(out.Notes, note)
				}
				break
			}
			out.Actions = append(out.Actions, a)
			if a.Type == Release {
				c.active--
				freed++
			}
		}
	}

	before := c.active
	for _, n := range candidates {
		if c.uninstalling || c.warmerMissing || s.MaintenanceUnknown != "" {
			break
		}
		if n.DeletionTimestamp != nil {
			// Going away (a finalizer holds it while the node is drained): a slot of
			// maxConcurrent taken for it would hold back a node that comes back.
			out.Notes = append(out.Notes, Note{Node: n.Name, Message: "not tainted: in maintenance, but the node is being deleted"})
			continue
		}
		if !p.rule.Detectable(n) {
			// Tainted, it would wait maxWaitForUpgrade (hours) for an upgrade the rule can never
			// see, then open cold: left alone, it takes no slot of maxConcurrent.
			out.Notes = append(out.Notes, p.undetectable(n))
			continue
		}
		if c.limit > 0 && c.active >= c.limit {
			out.Notes = append(out.Notes, Note{Node: n.Name, Message: fmt.Sprintf(
				"waiting: in maintenance, but maxConcurrent (%d) nodes are already tainted or warming", c.limit)})
			continue
		}
		out.Actions = append(out.Actions, p.enter(c, n))
		c.active++
		if kernel, ok := p.rule.OnTarget(n); ok {
			out.Notes = append(out.Notes, Note{Node: n.Name, Warning: true, Message: fmt.Sprintf(
				"tainted already on target kernel %s: upgrade.kernelVersions counts it as upgraded, so it is released once its warmer pod "+
					"is Ready, before any reboot this maintenance brings (a reimage would leave it open and cold); "+
					"list only the kernels of the rollout under way", kernel)})
		}
	}
	if entered := c.active - before; c.limit > 0 && entered > 0 {
		// Without the releases, before+freed nodes would hold slots: the entries beyond the limit
		// then are the ones the releases made room for.
		out.EntriesOnReleases = max(0, min(entered, before+freed+entered-c.limit))
	}
	if c.poolSize == 0 {
		out.Notes = append(out.Notes, p.emptyPool())
	}
	if c.uninstalling {
		// At WARN: a mark that outlives its uninstall (one that failed to remove it, a cleanup
		// --uninstall run by hand) stops the installation for good.
		out.Notes = append(out.Notes, Note{Warning: true, Message: fmt.Sprintf(
			"the installation is being uninstalled (DaemonSet %s/%s has %s): no node is tainted or adopted; if it is not, remove the annotation",
			p.cfg.Warmer.Namespace, p.cfg.Warmer.DaemonSetName, state.Uninstalling)})
	}
	if c.warmerMissing && !c.uninstalling && (len(candidates) > 0 || c.managed > 0) {
		// (Being deleted after the uninstall's mark: the uninstall says why nothing is tainted.)
		out.Notes = append(out.Notes, p.warmerMissing(c, candidates))
	}
	if s.MaintenanceUnknown != "" {
		out.Notes = append(out.Notes, Note{Message: fmt.Sprintf(
			"maintenance source %s not read yet: no node is entered, and no tainted node leaves maintenance, until it is", s.MaintenanceUnknown)})
	}
	return out
}

// notOurs is the note about a node with a phase and an owner other than this installation. An
// owner that names an installation is another's, skipped quietly (INFO), unless the node is in
// this installation's pool too and carries its taint or status label key: the other installation
// uses the same key (installations with disjoint pools may), and two whose pools overlap cannot
// share one (each warmer DaemonSet follows the other's status label; a node that joins with the
// shared taint goes to whichever adopts it first), so the note asks for an operator (WARN). An
// owner that names none (missing, empty, or not <namespace>/<release>: a hand edit, a tool
// rewriting annotations) is nobody's: no installation releases the node and its taint stays, so
// the note asks for an operator too. The node is not written either way: only its owner can say
// whose it is.
func (p *Planner) notOurs(n *corev1.Node, phase string) Note {
	was, ok := ownerRecord(n)
	if ok {
		// A node outside the pool is listed for its status label only: the other installation's,
		// in a pool of its own.
		if shared := p.sharedKeys(n); len(shared) > 0 && p.InPool(n) {
			return Note{Node: n.Name, Warning: true, Message: fmt.Sprintf(
				"skipped: phase %s is owned by %s, which uses this installation's (%s) %s: "+
					"installations whose pools overlap need distinct taint.key and statusLabel.key",
				quote(phase), quote(n.Annotations[state.Owner]), p.cfg.Instance, strings.Join(shared, " and "))}
		}
		return Note{Node: n.Name, Message: fmt.Sprintf(
			"skipped: phase %s is owned by %s, not this installation (%s)", quote(phase), quote(n.Annotations[state.Owner]), p.cfg.Instance)}
	}
	return Note{Node: n.Name, Warning: true, Message: fmt.Sprintf(
		"skipped: phase %s, but the owner annotation %s is %s, so no installation manages the node or removes its taint: "+
			"if this installation tainted it, set %s to %s (the next cycle then manages it, and cleanup releases it); "+
			"otherwise set it to the <namespace>/<release> of the installation that did",
		quote(phase), state.Owner, was, state.Owner, p.cfg.Instance)}
}

// sharedKeys names this installation's taint and status label keys that another installation's
// node n was given by its owner: as its records say (the taint's key whatever its effect), or,
// where a record is missing (nodes entered before there were records), as the node's taints and
// labels do.
func (p *Planner) sharedKeys(n *corev1.Node) []string {
	var shared []string
	taint, ok := state.RecordedTaint(n)
	if ok && taint.Key == p.cfg.Taint.Key ||
		!ok && slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == p.cfg.Taint.Key }) {
		shared = append(shared, "taint key "+p.cfg.Taint.Key)
	}
	label, ok := state.RecordedStatusLabel(n)
	if _, has := n.Labels[p.cfg.StatusLabel.Key]; ok && label == p.cfg.StatusLabel.Key || !ok && has {
		shared = append(shared, "status label key "+p.cfg.StatusLabel.Key)
	}
	return shared
}

// ownerRecord reports whether a node's owner annotation names an installation, and when it does
// not, what is wrong with it: missing, empty or malformed.
func ownerRecord(n *corev1.Node) (problem string, ok bool) {
	owner, found := n.Annotations[state.Owner]
	switch {
	case found && validOwner(owner):
		return "", true
	case !found:
		return "missing", false
	case owner == "":
		return "empty", false
	default:
		return fmt.Sprintf("malformed (%s, not <namespace>/<release>)", quote(owner)), false
	}
}

// validOwner reports whether an owner annotation names an installation: <namespace>/<release>,
// a namespace name and a DNS-1123 subdomain, as config.Validate checks instance.
func validOwner(owner string) bool {
	ns, release, ok := strings.Cut(owner, "/")
	return ok && !strings.Contains(release, "/") &&
		len(validation.IsDNS1123Label(ns)) == 0 && len(validation.IsDNS1123Subdomain(release)) == 0
}

// undetectable is the note about a node in maintenance left untainted because the change rule
// could never see its upgrade (Rule.Detectable): it reports neither a kernel nor a boot ID.
func (p *Planner) undetectable(n *corev1.Node) Note {
	kernel := "status.nodeInfo.kernelVersion"
	if l := p.cfg.Upgrade.KernelVersionLabel; l != "" {
		kernel = "label " + l + " or " + kernel
	}
	return Note{Node: n.Name, Warning: true, Message: fmt.Sprintf(
		"not tainted: the node reports no kernel (%s) and no boot ID (status.nodeInfo.bootID), so its upgrade could not be detected "+
			"and it would stay tainted until maxWaitForUpgrade (%s); it goes through this maintenance without pre-warming "+
			"(a kubelet that reports nodeInfo, upgrade.kernelVersions or upgrade.when would let it be pre-warmed)",
		kernel, p.cfg.MaxWaitForUpgrade.Duration)}
}

// maxNamesInNote bounds the node names a pool-wide note lists.
const maxNamesInNote = 5

// nameList names the first maxNamesInNote nodes, and counts the others: "a, b, c, d, e and 2 more".
func nameList(nodes []*corev1.Node) string {
	names := make([]string, 0, min(len(nodes), maxNamesInNote))
	for _, n := range nodes[:min(len(nodes), maxNamesInNote)] {
		names = append(names, n.Name)
	}
	list := strings.Join(names, ", ")
	if more := len(nodes) - len(names); more > 0 {
		list += fmt.Sprintf(" and %d more", more)
	}
	return list
}

// warmerMissing is the note of a plan made while the warmer DaemonSet does not exist: no node is
// tainted for maintenance then (skipped are the nodes that would have been), since none could
// become warm; each would only wait for its timeout and open cold, hours later than without this
// product. Nodes that joined with the taint are still adopted (their timeout releases them).
func (p *Planner) warmerMissing(c *cycle, skipped []*corev1.Node) Note {
	var b strings.Builder
	if c.warmerDeleting {
		fmt.Fprintf(&b, "warmer DaemonSet %s/%s is being deleted: no node is tainted for maintenance until it exists again",
			p.cfg.Warmer.Namespace, p.cfg.Warmer.DaemonSetName)
	} else {
		fmt.Fprintf(&b, "warmer DaemonSet %s/%s not found: no node is tainted for maintenance until it exists",
			p.cfg.Warmer.Namespace, p.cfg.Warmer.DaemonSetName)
	}
	if len(skipped) > 0 {
		fmt.Fprintf(&b, " (%d node(s) in maintenance are upgraded without pre-warming: %s)", len(skipped), nameList(skipped))
	}
	switch {
	case c.managed > 0 && c.warmerDeleting:
		// Its Ready pods still prove their nodes warm; it only creates no new ones.
		fmt.Fprintf(&b, ", and it creates no new warmer pod for the %d managed node(s)", c.managed)
	case c.managed > 0:
		fmt.Fprintf(&b, ", and none of the %d managed node(s) can become warm", c.managed)
	}
	return Note{Message: b.String(), Warning: true}
}

// emptyPool is the note of a plan made while no node matches the pool selector, at WARN: most
// often a selector that names no node (a typo in pool.nodeSelector), which would otherwise show
// only as a cycle with nothing to do. Nodes that left the pool are still released.
func (p *Planner) emptyPool() Note {
	return Note{Warning: true, Message: fmt.Sprintf(
		"no node matches the pool selector %s: nothing to pre-warm until one does; check pool.nodeSelector against the nodes' labels", p.pool)}
}

// cycle holds what Compute derives once from the snapshot.
type cycle struct {
	s        Snapshot
	now      string
	pods     map[string][]*corev1.Pod // by node name, owned by the DaemonSet
	revision string                   // current revision hash, "" when unknown
	active   int                      // nodes tainted or warming, owned by us
	managed  int
	limit    int // 0: no limit
	// poolSize counts the snapshot's nodes that match the pool selector.
	poolSize int
	// uninstalling: the DaemonSet carries state.Uninstalling; nothing is tainted or adopted.
	uninstalling bool
	// warmerMissing: the snapshot has no warmer DaemonSet (it does not exist), or one being
	// deleted (warmerDeleting); nothing is tainted for maintenance, nodes that joined with the
	// taint are still adopted.
	warmerMissing, warmerDeleting bool
}

// statusOfThisNode reports whether pod's status may be this node's kubelet's: a pod created with
// or after the node object, or an older one with a condition that changed since the node was
// created. Until then an older pod's status (a pull failing, say) is the old node's, and is not
// reported as this one's problem.
func statusOfThisNode(pod *corev1.Pod, n *corev1.Node) bool {
	return !olderThan(pod, n) || slices.ContainsFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool {
		return !c.LastTransitionTime.Before(&n.CreationTimestamp)
	})
}

// olderThan reports whether pod was created before the node object n (both the API server's
// times, to the second).
func olderThan(pod *corev1.Pod, n *corev1.Node) bool {
	return pod.CreationTimestamp.Before(&n.CreationTimestamp)
}

// problemPods returns the node's warmer pods whose problems are the node's (statusOfThisNode).
func (c *cycle) problemPods(n *corev1.Node) []*corev1.Pod {
	pods := c.pods[n.Name]
	if !slices.ContainsFunc(pods, func(pod *corev1.Pod) bool { return !statusOfThisNode(pod, n) }) {
		return pods
	}
	return slices.DeleteFunc(slices.Clone(pods), func(pod *corev1.Pod) bool { return !statusOfThisNode(pod, n) })
}

// readyOnThisNode reports whether pod's Ready status is this node's: always for a pod created
// with or after the node object; for an older one (a pod of an earlier node of the same name,
// deleted and registered again, as a reimage or a replacement with the same hostname does, that
// pod garbage collection left since the name came back), only once it turned Ready after the
// node was created, as a kubelet starting on a new disk makes it (until then its Ready status is
// the old node's, not this disk's). Fail-closed where it cannot tell: a machine registered again
// without a reboot keeps the pod's containers running and its Ready transition old, and a kubelet
// clock behind the API server's (creation times are the server's, a Ready transition the
// kubelet's) dates the transition early; the node then opens at its timeout, with a Warning.
func readyOnThisNode(pod *corev1.Pod, n *corev1.Node) bool {
	if !olderThan(pod, n) {
		return true
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && !c.LastTransitionTime.Before(&n.CreationTimestamp)
		}
	}
	return false
}

func (p *Planner) newCycle(s Snapshot) *cycle {
	c := &cycle{s: s, now: state.FormatTime(s.Now), pods: map[string][]*corev1.Pod{}, warmerMissing: s.DaemonSet == nil}
	if ds := s.DaemonSet; ds != nil {
		_, c.uninstalling = ds.Annotations[state.Uninstalling]
		// A DaemonSet being deleted (foreground deletion, a finalizer) creates no more pods:
		// as for one that does not exist, no node is tainted for it.
		c.warmerDeleting = ds.DeletionTimestamp != nil
		c.warmerMissing = c.warmerDeleting
		for _, pod := range s.Pods {
			if node := PodNode(pod); owned(pod, ds) && node != "" {
				c.pods[node] = append(c.pods[node], pod)
			}
		}
		c.revision = CurrentRevision(ds, s.Revisions)
	}
	for _, n := range s.Nodes {
		if p.InPool(n) {
			c.poolSize++
		}
		if p.Owns(n) {
			c.managed++
			if p.TakesASlot(n) {
				c.active++
			}
		}
	}
	c.limit = Budget(p.cfg.MaxConcurrent, c.poolSize)
	return c
}

// Budget returns the maximum number of nodes in phase tainted or warming for a pool of
// poolSize nodes; 0 means no limit. Percentages round up, so a non-zero percentage of a
// non-empty pool always allows at least one node.
func Budget(v intstr.IntOrString, poolSize int) int {
	if v.Type == intstr.Int {
		return int(v.IntVal)
	}
	pct, err := strconv.Atoi(strings.TrimSuffix(v.StrVal, "%"))
	if err != nil || pct <= 0 {
		return 0
	}
	n := int(math.Ceil(float64(pct) * float64(poolSize) / 100))
	if n < 1 {
		n = 1
	}
	return n
}

// CurrentRevision returns the controller-revision-hash of the DaemonSet's newest
// ControllerRevision, or "" while the DaemonSet controller has not observed its latest spec.
func CurrentRevision(ds *appsv1.DaemonSet, revisions []*appsv1.ControllerRevision) string {
	if ds.Status.ObservedGeneration < ds.Generation {
		return ""
	}
	var newest *appsv1.ControllerRevision
	for _, r := range revisions {
		if !ownedBy(r.OwnerReferences, ds) {
			continue
		}
		if newest == nil || r.Revision > newest.Revision {
			newest = r
		}
	}
	if newest == nil {
		return ""
	}
	return newest.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
}

func owned(pod *corev1.Pod, ds *appsv1.DaemonSet) bool { return ownedBy(pod.OwnerReferences, ds) }

func ownedBy(refs []metav1.OwnerReference, ds *appsv1.DaemonSet) bool {
	for _, ref := range refs {
		if ref.Controller != nil && *ref.Controller && ref.UID == ds.UID && ref.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

// planUnmanaged handles a node with no phase: it returns the action to take, if any, and
// whether the node is a candidate to enter maintenance if the budget allows.
func (p *Planner) planUnmanaged(c *cycle, n *corev1.Node) (*Action, bool) {
	if !p.InPool(n) {
		// Listed only because it carries the status label; without a phase it is not ours.
		return nil, false
	}
	if p.joinedTainted(n) {
		if c.uninstalling || n.DeletionTimestamp != nil {
			// A node being deleted is not adopted: nothing will use it.
			return nil, false
		}
		a := p.adopt(c, n)
		return &a, false
	}
	active := c.s.Maintenance[n.Name]
	switch {
	case c.s.MaintenanceUnknown != "":
		// No entry. A presence maintenance's end is recorded only where the unread source can
		// change nothing: a node whose record names none of its maintenances (any active one
		// would be new, and enter the node, once the source is read, as it would now).
		if slices.ContainsFunc(recordedIDs(n), func(id string) bool { return !isPresenceID(id) }) {
			return nil, false
		}
		if len(active) == 0 {
			return p.recordMaintenanceEnded(c, n), false
		}
		return p.recordPresenceLeft(c, n, active), false
	case len(active) == 0:
		return p.recordMaintenanceEnded(c, n), false
	}
	if !p.releasedFor(n, active) {
		return nil, true
	}
	if a := p.recordPresenceUnder(n, active); a != nil {
		return a, false
	}
	return p.recordPresenceLeft(c, n, active), false
}

// releasedFor reports whether the node was already released for these maintenances: whether
// every one of them is among the identities recorded on the node (an object's UID; a presence
// source's name, while the node never left that set). A maintenance that is not is a new one,
// such as a second NodeMaintenance created while the one the node was released for remains.
//
// A cordon that comes while a NodeMaintenance the node was released for lasts is part of that
// NodeMaintenance, as recordPresenceLeft has it for a cordon or label that goes: medik8s cordons
// the node of its NodeMaintenance again if someone uncordoned it (at the release, say), and the
// node, warm already, would otherwise be tainted to wait for an upgrade that happened. Not a
// label: a pipeline labels a node for its next upgrade, which may come while the object of the
// last one lingers.
func (p *Planner) releasedFor(n *corev1.Node, active []Maintenance) bool {
	recorded := recordedIDs(n)
	_, ended := n.Annotations[state.MaintenanceEnded]
	under := underRecordedNodeMaintenance(recorded, active)
	for _, m := range active {
		switch {
		case m.Source == SourceNodeMaintenance:
			if !slices.Contains(recorded, m.ID) {
				return false
			}
		case m.Source == SourceCordoned && under:
		case !slices.Contains(recorded, m.ID) || ended:
			return false
		}
	}
	return len(active) > 0
}

// underRecordedNodeMaintenance reports whether a NodeMaintenance recorded on the node is
// among the active maintenances.
func underRecordedNodeMaintenance(recorded []string, active []Maintenance) bool {
	return slices.ContainsFunc(active, func(m Maintenance) bool {
		return m.Source == SourceNodeMaintenance && slices.Contains(recorded, m.ID)
	})
}

// recordPresenceUnder records on a released node the cordon that came while a NodeMaintenance
// it was released for lasts (see releasedFor), so that the node still cordoned when the
// NodeMaintenance goes is not taken for a new maintenance and tainted again (medik8s uncordons
// the node after its NodeMaintenance is gone, not before). A maintenance-ended-at mark (another
// installation's, or from before a configuration change) is lifted with it: the cordon lasts.
func (p *Planner) recordPresenceUnder(n *corev1.Node, active []Maintenance) *Action {
	recorded := recordedIDs(n)
	cordoned := slices.ContainsFunc(active, func(m Maintenance) bool { return m.Source == SourceCordoned })
	if !cordoned || !underRecordedNodeMaintenance(recorded, active) {
		return nil
	}
	_, ended := n.Annotations[state.MaintenanceEnded]
	if slices.Contains(recorded, SourceCordoned) && !ended {
		return nil
	}
	ids := []string{SourceCordoned}
	for _, id := range recorded {
		// With the end marked, every recorded presence maintenance is over but this cordon (a
		// label that lasts would have made the node's maintenance a new one).
		if !ended || !isPresenceID(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	a := &Action{
		Node: n.Name, Type: Record, Reason: "maintenance-joined",
		Message: "cordoned under the NodeMaintenance it was released for",
		Change:  Change{Annotations: map[string]*string{}},
	}
	if v := strings.Join(slices.Compact(ids), ","); v != n.Annotations[state.MaintenanceID] {
		a.Change.Annotations[state.MaintenanceID] = ptr(v)
	}
	if ended {
		a.Change.Annotations[state.MaintenanceEnded] = nil
	}
	return a
}

// upgradeToCome reports whether a maintenance that began after the node went warming still has
// its upgrade to come, so that the node's release for being warm (or for its warm timeout, or by
// an operator who removed the taint) must not record it as done (upgradedFor): the node has not rebooted since (a reboot may have been
// that maintenance's upgrade), and the upgrade rule would wait for a new one (not so on a target
// kernel of upgrade.kernelVersions, where the node counts as upgraded at once, so that being
// tainted again would only hold it until a new warmer pod is Ready). A node that went warming
// before its boot ID was recorded is released as before, recording every active maintenance.
func (p *Planner) upgradeToCome(n *corev1.Node, reason string) bool {
	if state.PhaseOf(n) != state.PhaseWarming || (reason != state.ReasonWarm && reason != state.ReasonTimeout && reason != state.ReasonExternal) {
		return false
	}
	if boot, ok := n.Annotations[state.UpgradedBootID]; !ok || boot != n.Status.NodeInfo.BootID {
		return false
	}
	_, onTarget := p.rule.OnTarget(n)
	return !onTarget
}

// upgradedFor splits the maintenances active on a warming node into those its upgrade was for
// (recorded at its entry, at its adoption or when the upgrade was seen; a NodeMaintenance created
// before the upgrade was seen by a cycle that could not read the objects, marked upgraded-unread,
// which left it out; and a cordon under a recorded NodeMaintenance, which is part of it) and those that began later: a
// pipeline that starts the node's next maintenance (a new NodeMaintenance, its label) while the
// node is still warming. The node still has that one's upgrade to come, so its release must not
// record it as done, or the node would not be tainted for it and would open cold after that
// upgrade. known are the maintenances the snapshot read: a cordon is under a recorded
// NodeMaintenance only if that object was read, not merely kept in active while the source is
// unknown (it may be gone, and the cordon then the next maintenance; left out of the record, a
// cordon that is under a lasting NodeMaintenance after all is still taken for part of it once the
// source is read).
func (p *Planner) upgradedFor(n *corev1.Node, active, known []Maintenance) (upgraded, later []Maintenance) {
	recorded := recordedIDs(n)
	under := underRecordedNodeMaintenance(recorded, known)
	_, ended := n.Annotations[state.MaintenanceEnded] // the recorded cordons and labels were over
	// Zero unless the objects could not be read when the upgrade was seen.
	var upgradedAt time.Time
	if _, unread := n.Annotations[state.UpgradedUnread]; unread {
		upgradedAt, _ = state.Time(n, state.UpgradedAt)
	}
	for _, m := range active {
		switch {
		case slices.Contains(recorded, m.ID) && !(ended && isPresenceID(m.ID)),
			m.Source == SourceCordoned && under,
			m.Source == SourceNodeMaintenance && createdBefore(m, upgradedAt):
			upgraded = append(upgraded, m)
		default:
			later = append(later, m)
		}
	}
	return upgraded, later
}

// createdBefore reports whether the maintenance object was created in a second before t's
// (creation times have whole seconds, as upgraded-at has): one created in the same second as
// the upgrade was seen may have come after it, and counts as later (the node waits again rather
// than open cold). Another installation's clock, or the API server's, off by a few seconds moves
// the line by as much: a maintenance that begins within seconds of the cycle that sees a node's
// upgrade is as likely to be the one it was for.
func createdBefore(m Maintenance, t time.Time) bool {
	return !m.Created.IsZero() && !t.IsZero() && m.Created.Unix() < t.Unix()
}

// upgradeRecord renders maintenance-id when a node's upgrade is seen: the maintenances active
// then and those recorded before (a NodeMaintenance deleted before the reboot was seen is still
// the one the upgrade is for), but for a cordon or label of a source this configuration reads
// that has ended meanwhile, unless a recorded NodeMaintenance lasts (a cordon or label that
// comes and goes under it is part of it): a label or cordon that comes again while the node is
// warming is the next maintenance, and must not be found recorded at the release. "" when
// every recorded maintenance is such a cordon or label and none is active: the record is then
// kept and marked ended (maintenance-ended-at), as a release marks it. While the NodeMaintenance
// source is unknown no recorded object is known to last, so an ended cordon or label is dropped
// (one that comes again under an object that lasts after all is taken for the next maintenance:
// the node waits again, the fail-closed side).
func (p *Planner) upgradeRecord(c *cycle, n *corev1.Node) string {
	recorded, active := recordedIDs(n), c.s.Maintenance[n.Name]
	under := underRecordedNodeMaintenance(recorded, active)
	var ids []string
	for _, id := range recorded {
		ended := p.presenceRead(id) && !slices.ContainsFunc(active, func(m Maintenance) bool { return m.ID == id })
		if !ended || under {
			ids = append(ids, id)
		}
	}
	for _, m := range active {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return strings.Join(slices.Compact(ids), ",")
}

// recordedIDs are the maintenance identities recorded on the node (maintenance-id: one, or
// several separated by commas when several sources named the node at once).
func recordedIDs(n *corev1.Node) []string {
	v := n.Annotations[state.MaintenanceID]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// maintenanceIDs renders the identities of the active maintenances for maintenance-id: every
// source that names the node, so that a node released while one of them lasts longer than the
// others (a NodeMaintenance deleted before the node is uncordoned, with the cordoned source on
// too) is not taken for a new maintenance and tainted again.
func maintenanceIDs(ms []Maintenance) string {
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return strings.Join(slices.Compact(ids), ",")
}

// recordMaintenanceEnded marks a released node whose presence-based maintenances are over, so
// the next time it enters one of those sets it is a new maintenance. Only for sources this
// configuration reads: a cordon or label recorded by another installation whose pool overlaps
// this one may well last, so while the record names one, the maintenances this configuration
// saw end are dropped from it instead, as recordPresenceLeft does, and the end is left for that
// installation to mark.
func (p *Planner) recordMaintenanceEnded(c *cycle, n *corev1.Node) *Action {
	ids := recordedIDs(n)
	if !slices.ContainsFunc(ids, p.presenceRead) {
		return nil
	}
	if _, ended := n.Annotations[state.MaintenanceEnded]; ended {
		return nil
	}
	var left []string
	kept := slices.DeleteFunc(slices.Clone(ids), func(id string) bool {
		if p.presenceRead(id) {
			left = append(left, id)
			return true
		}
		return false
	})
	a := &Action{
		Node: n.Name, Type: Record, Reason: "maintenance-ended",
		Message: fmt.Sprintf("no longer in maintenance source %s", strings.Join(left, ", ")),
		Change:  Change{Annotations: map[string]*string{state.MaintenanceEnded: ptr(c.now)}},
	}
	if slices.ContainsFunc(kept, isPresenceID) {
		a.Change.Annotations = map[string]*string{state.MaintenanceID: ptr(strings.Join(kept, ","))}
	}
	return a
}

// recordPresenceLeft drops from the record of a released node the presence maintenances that
// are over while another presence maintenance lasts (a label removed while the cordon stays), so
// that the node entering that set again is a new maintenance: a presence maintenance is the
// node's unbroken stay in its set, which maintenance-ended-at alone marks only once every
// maintenance on the node has ended. Not while a NodeMaintenance lasts: a cordon or label that
// comes and goes under it is part of it (medik8s cordons the node of its NodeMaintenance, and
// cordons it again if someone uncordons it), and the node was released for it. Only the sources
// this configuration reads count: a disabled source's record may be another installation's, and
// its absence from the snapshot says nothing. Presence sources are read from the nodes
// themselves, so this holds also while the NodeMaintenance source is unknown, for a node whose
// record names no NodeMaintenance. With none of the recorded maintenances left, their end is
// marked as when none lasts.
func (p *Planner) recordPresenceLeft(c *cycle, n *corev1.Node, active []Maintenance) *Action {
	if _, ended := n.Annotations[state.MaintenanceEnded]; ended {
		return nil
	}
	if slices.ContainsFunc(active, func(m Maintenance) bool { return m.Source == SourceNodeMaintenance }) {
		return nil
	}
	var left []string
	kept := slices.DeleteFunc(recordedIDs(n), func(id string) bool {
		over := p.presenceRead(id) && !slices.ContainsFunc(active, func(m Maintenance) bool { return m.ID == id })
		if over {
			left = append(left, id)
		}
		return over
	})
	switch {
	case len(left) == 0:
		return nil
	case len(kept) == 0:
		return p.recordMaintenanceEnded(c, n)
	}
	return &Action{
		Node: n.Name, Type: Record, Reason: "maintenance-ended",
		Message: fmt.Sprintf("no longer in maintenance source %s", strings.Join(left, ", ")),
		Change:  Change{Annotations: map[string]*string{state.MaintenanceID: ptr(strings.Join(kept, ","))}},
	}
}

// presenceRead reports whether id is a presence source this configuration reads.
func (p *Planner) presenceRead(id string) bool {
	switch id {
	case SourceCordoned:
		return p.cfg.Maintenance.Cordoned.Enabled
	case SourceNodeLabel:
		return p.cfg.Maintenance.NodeLabel.Enabled
	}
	return false
}

func isPresenceID(id string) bool { return id == SourceNodeLabel || id == SourceCordoned }

// startAnnotations are the annotations a node gets when it becomes managed: phase, owner, the
// baseline, and the removal of whatever an earlier maintenance left.
func (p *Planner) startAnnotations(c *cycle, n *corev1.Node, phase string) map[string]*string {
	ann := map[string]*string{
		state.Phase:          ptr(phase),
		state.Owner:          ptr(p.cfg.Instance),
		state.BaselineKernel: ptr(p.rule.Kernel(n)),
		state.BaselineBootID: ptr(n.Status.NodeInfo.BootID),
		state.TaintedAt:      ptr(c.now),
		state.Taint:          ptr(state.FormatTaint(p.taint())),
		state.StatusLabel:    ptr(p.cfg.StatusLabel.Key),
		state.StatusValues:   ptr(state.FormatStatusValues(p.cfg.StatusLabel.Value, p.cfg.StatusLabel.WarmingValue)),
	}
	if src := p.rule.KernelSource(n); src != "" {
		ann[state.BaselineKernelSource] = ptr(src)
	}
	for _, k := range append(slices.Clone(state.RecordAnnotations), state.BaselineKernelSource, state.UpgradedAt, state.UpgradedBootID, state.UpgradedUnread, state.LeftMaintenanceAt, state.WarmerPodUID, state.WarmerPodRestarts) {
		if _, set := ann[k]; set {
			continue
		}
		if _, ok := n.Annotations[k]; ok {
			ann[k] = nil
		}
	}
	return ann
}

func (p *Planner) enter(c *cycle, n *corev1.Node) Action {
	m := primary(c.s.Maintenance[n.Name])
	ann := p.startAnnotations(c, n, state.PhaseTainted)
	ann[state.MaintenanceID] = ptr(maintenanceIDs(c.s.Maintenance[n.Name]))
	// A warmer pod already here (keepAfterRelease) must not count as warm unless it restarts.
	if pod := livePod(c.pods[n.Name]); pod != nil {
		ann[state.WarmerPodUID] = ptr(string(pod.UID))
		ann[state.WarmerPodRestarts] = ptr(strconv.FormatInt(state.PodRestarts(pod), 10))
	}
	taint := p.taint()
	msg := fmt.Sprintf("in maintenance (%s): tainted %s until its images are warm after the upgrade", describe(m), taintString(taint))
	return Action{
		Node: n.Name, Type: Enter, Reason: m.Source, Message: msg,
		Change: Change{
			AddTaint:    &taint,
			Labels:      map[string]*string{p.cfg.StatusLabel.Key: ptr(p.cfg.StatusLabel.Value)},
			Annotations: ann,
		},
		Events: p.transition("PrewarmTainted", msg),
	}
}

func (p *Planner) adopt(c *cycle, n *corev1.Node) Action {
	if pod := p.warmPod(c, n); pod != nil {
		a := p.release(c, n, state.ReasonWarm, fmt.Sprintf("joined with taint %s and warmer pod %s is Ready", p.cfg.Taint.Key, pod.Name))
		a.WarmPod = pod
		return a
	}
	msg := fmt.Sprintf("joined with taint %s: warming until warmer pod is Ready", p.cfg.Taint.Key)
	ann := p.startAnnotations(c, n, state.PhaseWarming)
	ann[state.UpgradedAt] = ptr(c.now)
	ann[state.UpgradedBootID] = ptr(n.Status.NodeInfo.BootID) // as when an upgrade is seen
	if c.s.MaintenanceUnknown != "" {
		ann[state.UpgradedUnread] = ptr(c.s.MaintenanceUnknown)
	}
	if active := c.s.Maintenance[n.Name]; len(active) > 0 {
		// It joined, but a maintenance names it: recorded as for an entry, so that its release
		// while that maintenance lasts does not make it look new, and the node entered again.
		ann[state.MaintenanceID] = ptr(maintenanceIDs(active))
	} else if _, ok := n.Annotations[state.MaintenanceID]; ok {
		ann[state.MaintenanceID] = nil // it joined: no maintenance of ours brought it here
	}
	return Action{
		Node: n.Name, Type: Adopt, Reason: "joined-tainted", Message: msg,
		Change: Change{
			Labels:      map[string]*string{p.cfg.StatusLabel.Key: ptr(p.cfg.StatusLabel.WarmingValue)},
			Annotations: ann,
		},
		Events: p.transition("PrewarmAdopted", msg),
	}
}

func (p *Planner) planManaged(c *cycle, n *corev1.Node) (Action, bool) {
	if !p.InPool(n) {
		a := p.release(c, n, state.ReasonLeftPool, "no longer matches the pool selector")
		if state.PhaseOf(n) == state.PhaseWarming && p.warmPod(c, n) == nil {
			// Upgraded and not warm: it opens without its images, which a Warning says, as for
			// a timeout (a pool selector changed by mistake does this to every warming node).
			a.Message += "; it was warming and its warmer pod is not Ready: it opens without its images"
			a.Events = []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmLeftPoolCold", Message: "released (left-pool): " + a.Message}}
		}
		return a, true
	}
	ours := p.ourTaint(n)
	if !state.HasTaint(n, ours.Key, ours.Effect) {
		return p.release(c, n, state.ReasonExternal, fmt.Sprintf("taint %s was removed by someone else; not re-tainting", ours.Key)), true
	}
	var a Action
	var ok bool
	if state.PhaseOf(n) == state.PhaseTainted {
		a, ok = p.planTainted(c, n)
	} else {
		a, ok = p.planWarming(c, n)
	}
	if ok && a.Type == Release {
		// Before a swap: a release removes the recorded taint and label itself, and a swap the
		// API server keeps refusing (an admission policy on the new key) must not hold the node
		// past its timeouts.
		return a, true
	}
	if !c.uninstalling {
		if swap, changed := p.replaceChanged(n, ours); changed {
			switch {
			case ok && a.Type == Record:
				// The planned record (a timer's start or repair, a problem) first, the swap at the
				// next plan: a swap the API server keeps refusing (an admission policy on the new
				// key) must not keep cancelAfter and the timeouts from starting, and a patch that
				// carried both would be refused whole. A record is written once.
				return a, true
			case ok && a.Type == Upgraded:
				// The upgrade seen and the swap in one patch: the node goes warming under the
				// configured key and taint at once, so that the new warmer starts now, not a
				// cycle later. The transition's label value (warming) wins over the swap's.
				a.Change.AddTaint, a.Change.RemoveTaint = swap.Change.AddTaint, swap.Change.RemoveTaint
				a.Change.Annotations = withMissing(a.Change.Annotations, swap.Change.Annotations)
				a.Change.Labels = withMissing(a.Change.Labels, swap.Change.Labels)
				a.Events = append(a.Events, swap.Events...)
				a.Message += "; " + swap.Message
				return a, true
			}
			return swap, true
		}
	}
	if ok && a.Change.Labels[p.cfg.StatusLabel.Key] != nil {
		return a, true // the action sets the label anyway
	}
	if !c.uninstalling {
		if r, restore := p.restoreStatusLabel(n); restore {
			if !ok {
				return r, true
			}
			// One patch for both: the planned record (a timer's start or repair, a problem) is
			// not put off while the label is put back, or a label removed again and again would
			// keep cancelAfter and the timeouts from ever starting.
			if a.Change.Labels == nil {
				a.Change.Labels = map[string]*string{}
			}
			maps.Copy(a.Change.Labels, r.Change.Labels)
			a.Events = append(a.Events, r.Events...)
			a.Message += "; " + r.Message
			return a, true
		}
	}
	return a, ok
}

// withMissing returns dst with the keys of src it lacks added (a nil dst is made).
func withMissing(dst, src map[string]*string) map[string]*string {
	if dst == nil && len(src) > 0 {
		dst = make(map[string]*string, len(src))
	}
	for k, v := range src {
		if _, set := dst[k]; !set {
			dst[k] = v
		}
	}
	return dst
}

// ourTaint is the taint this installation put on a managed node: the one recorded on it, else
// (a node managed before taints were recorded, or a record naming a taint of Kubernetes' node
// controllers, such as node.kubernetes.io/unschedulable, which no configuration may name, so only
// a hand edit can have put there) the configured one.
func (p *Planner) ourTaint(n *corev1.Node) corev1.Taint {
	if t, ok := state.RecordedTaint(n); ok && !state.NodeControllerTaint(t.Key) {
		return t
	}
	return p.taint()
}

// ourStatusLabel is the key of the status label this installation put on a managed node: the one
// recorded on it, else (a node managed before the key was recorded, a record that is not a label
// key, a record naming a label the configuration reads for something else, such as a pool
// selector key, or one of Kubernetes' own, such as kubernetes.io/hostname, which no configuration
// may name: none of which a swap or release may remove) the configured one.
func (p *Planner) ourStatusLabel(n *corev1.Node) string {
	if k, ok := state.RecordedStatusLabel(n); ok && !p.otherKeys[k] && !state.KubernetesLabel(k) {
		return k
	}
	return p.cfg.StatusLabel.Key
}

// restoreStatusLabel puts back the status label of a managed node that lost it (removed by
// hand, or by a tool that rewrites labels): the warmer DaemonSet follows that label, so without
// it no warmer pod would come and the node would wait for its timeout, then open cold. A value
// changed by hand stays, as in replaceChanged. Removing the taint, not the label, releases a node.
func (p *Planner) restoreStatusLabel(n *corev1.Node) (Action, bool) {
	key := p.cfg.StatusLabel.Key
	if _, ok := n.Labels[key]; ok {
		return Action{}, false
	}
	value := p.statusValue(n)
	msg := fmt.Sprintf("status label %s was removed while the node is %s: set to %s again, so that the warmer runs here (remove the taint %s to release the node)",
		key, state.PhaseOf(n), value, p.ourTaint(n).Key)
	return Action{
		Node: n.Name, Type: Record, Reason: "repaired", Message: msg,
		Change: Change{Labels: map[string]*string{key: ptr(value)}},
		Events: []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmStateRepaired", Message: msg}},
	}, true
}

// oddStatusValue is the note about a managed node whose status label has a value its phase does
// not call for (set by hand: such a value stays, see restoreStatusLabel): the warmer DaemonSet
// follows the label, so a warming node gets no warmer and opens only at maxWaitForWarm (unless
// the DaemonSet's kernel term admits it), and a tainted node labelled warming gets one before
// its upgrade, which pulls for nothing. Other values on a tainted node are harmless (the upgrade
// sets the label) and not noted.
func (p *Planner) oddStatusValue(n *corev1.Node) (Note, bool) {
	key, want := p.cfg.StatusLabel.Key, p.statusValue(n)
	cur, has := n.Labels[key]
	if !has || cur == want || p.ourStatusLabel(n) != key {
		return Note{}, false
	}
	var effect string
	switch state.PhaseOf(n) {
	case state.PhaseWarming:
		if l := p.cfg.Upgrade.KernelVersionLabel; cur == p.cfg.StatusLabel.Value && l != "" &&
			slices.Contains(p.cfg.Upgrade.KernelVersions, n.Labels[l]) {
			return Note{}, false // the DaemonSet's second term: status value and a target kernel label
		}
		effect = fmt.Sprintf("the warmer DaemonSet runs only where it is %s, so no warmer pod comes and the node stays tainted until maxWaitForWarm (%s)",
			want, p.cfg.MaxWaitForWarm.Duration)
	case state.PhaseTainted:
		if cur != p.cfg.StatusLabel.WarmingValue {
			return Note{}, false
		}
		effect = "the warmer DaemonSet runs its pod before the upgrade, pulling onto the disk the upgrade replaces"
	default:
		return Note{}, false
	}
	return Note{Node: n.Name, Warning: true, Message: fmt.Sprintf(
		"status label %s is %s, but the node is %s (%s=%s): %s; set it to %s or remove it (the orchestrator puts it back), or remove the taint %s to release the node",
		key, quote(cur), state.PhaseOf(n), key, want, effect, want, p.ourTaint(n).Key)}, true
}

// statusValue is the status label value a managed node's phase calls for.
func (p *Planner) statusValue(n *corev1.Node) string {
	if state.PhaseOf(n) == state.PhaseWarming {
		return p.cfg.StatusLabel.WarmingValue
	}
	return p.cfg.StatusLabel.Value
}

// replaceChanged swaps what a configuration change (a helm upgrade) left behind on a managed
// node: the taint recorded on it (oldTaint) for the configured taint, and the status label under
// the recorded key for the configured key, set to the value the node's phase calls for. It is one
// patch, so the node stays closed, and the new warmer DaemonSet, which tolerates only the new
// taint and follows only the new label, can run there. Without it the old taint and label would
// wait for a warmer that never comes, and no later release would remove them. The patch records
// the configured taint, key and values on the node (adding the records a node managed before
// they existed lacks). A changed statusLabel.value or warmingValue, against the values recorded on
// the node, sets the label's value the same way, unless it was set by hand. changed is false when
// nothing differs from the configuration.
func (p *Planner) replaceChanged(n *corev1.Node, oldTaint corev1.Taint) (a Action, changed bool) {
	wantTaint, oldKey, wantKey := p.taint(), p.ourStatusLabel(n), p.cfg.StatusLabel.Key
	taintChanged, labelChanged := oldTaint != wantTaint, oldKey != wantKey
	// Values: only against the values recorded on the node, so that a value someone set by hand
	// is never taken for a changed configuration (nor fought every cycle).
	wantValues := state.FormatStatusValues(p.cfg.StatusLabel.Value, p.cfg.StatusLabel.WarmingValue)
	oldValue, oldWarming, recorded := state.RecordedStatusValues(n)
	valuesChanged := recorded && state.FormatStatusValues(oldValue, oldWarming) != wantValues
	if !taintChanged && !labelChanged && !valuesChanged {
		return Action{}, false
	}
	ch := Change{Annotations: map[string]*string{}}
	for k, v := range map[string]string{state.Taint: state.FormatTaint(wantTaint), state.StatusLabel: wantKey, state.StatusValues: wantValues} {
		if cur, ok := n.Annotations[k]; !ok || cur != v {
			ch.Annotations[k] = ptr(v)
		}
	}
	var reasons, msgs []string
	var events []Event
	if taintChanged {
		ch.RemoveTaint, ch.AddTaint = &oldTaint, &wantTaint
		msg := fmt.Sprintf("the configured taint changed: %s replaced by %s", taintString(oldTaint), taintString(wantTaint))
		reasons, msgs = append(reasons, "taint"), append(msgs, msg)
		events = append(events, p.transition("PrewarmTaintReplaced", msg)...)
	}
	if labelChanged {
		value := p.statusValue(n)
		ch.Labels = map[string]*string{wantKey: ptr(value)}
		if _, ok := n.Labels[oldKey]; ok {
			ch.Labels[oldKey] = nil
		}
		msg := fmt.Sprintf("the configured status label changed: %s replaced by %s=%s", oldKey, wantKey, value)
		reasons, msgs = append(reasons, "status-label"), append(msgs, msg)
		events = append(events, p.transition("PrewarmStatusLabelReplaced", msg)...)
	} else if valuesChanged {
		// The label gets the value its phase now calls for only if it still has the one its phase
		// called for: a value set by hand stays (the record is updated either way).
		was := oldValue
		if state.PhaseOf(n) == state.PhaseWarming {
			was = oldWarming
		}
		if cur, ok := n.Labels[wantKey]; ok && cur == was && cur != p.statusValue(n) {
			value := p.statusValue(n)
			ch.Labels = map[string]*string{wantKey: ptr(value)}
			msg := fmt.Sprintf("the configured status label value changed: %s=%s replaced by %s=%s", wantKey, was, wantKey, value)
			reasons, msgs = append(reasons, "status-label"), append(msgs, msg)
			events = append(events, p.transition("PrewarmStatusLabelReplaced", msg)...)
		} else {
			reasons, msgs = append(reasons, "status-values"), append(msgs, "the configured status label values changed: recorded")
		}
	}
	return Action{
		Node: n.Name, Type: Record, Reason: strings.Join(reasons, "-and-") + "-changed", Message: strings.Join(msgs, "; "),
		Change: ch, Events: events,
	}, true
}

func (p *Planner) planTainted(c *cycle, n *corev1.Node) (Action, bool) {
	baseline := upgrade.Baseline{Kernel: n.Annotations[state.BaselineKernel], KernelSource: n.Annotations[state.BaselineKernelSource], BootID: n.Annotations[state.BaselineBootID]}
	baseline.TaintedAt, _ = state.Time(n, state.TaintedAt) // as recorded, for upgrade.when
	taintedAt, hasTaintedAt := recordedTime(c, n, state.TaintedAt)
	// A rule that fails on this node says nothing about its upgrade: the node is treated as not
	// upgraded, so that cancelAfter and maxWaitForUpgrade still release it, and the error is
	// reported when nothing else is to be done.
	upgraded, ruleErr := p.rule.Upgraded(n, baseline)
	if upgraded && state.NodeReady(n) {
		if pod := p.warmPod(c, n); pod != nil {
			a := p.release(c, n, state.ReasonWarm, fmt.Sprintf("upgraded (kernel %s) and warmer pod %s is Ready", clip(p.rule.Kernel(n)), pod.Name))
			a.WarmPod = pod
			return a, true
		}
		msg := fmt.Sprintf("upgrade seen (kernel %s, was %s): warming until warmer pod is Ready", clip(p.rule.KernelAgainst(n, baseline)), clip(baseline.Kernel))
		ann := map[string]*string{state.Phase: ptr(state.PhaseWarming), state.UpgradedAt: ptr(c.now)}
		// The maintenances of the node now are the ones this upgrade is for: recorded, so that
		// one that begins later is told apart at the release (upgradeToCome). While the
		// NodeMaintenance source is unknown, the objects recorded are kept as they are, and
		// one that joined since the entry is missing: marked so, the release finds it by its
		// creation time, before upgraded-at (upgradedFor).
		ann[state.UpgradedBootID] = ptr(n.Status.NodeInfo.BootID)
		if c.s.MaintenanceUnknown != "" {
			ann[state.UpgradedUnread] = ptr(c.s.MaintenanceUnknown)
		}
		switch ids := p.upgradeRecord(c, n); {
		case ids == "":
			// Every maintenance recorded is a cordon or label that is over: kept for the
			// record, and marked ended as a release would.
			ann[state.MaintenanceEnded] = ptr(c.now)
		case ids != n.Annotations[state.MaintenanceID]:
			ann[state.MaintenanceID] = ptr(ids)
		}
		if _, ok := n.Annotations[state.LeftMaintenanceAt]; ok {
			ann[state.LeftMaintenanceAt] = nil
		}
		if ruleErrorRecorded(n) {
			ann[state.LastError] = nil
		}
		return Action{
			Node: n.Name, Type: Upgraded, Reason: "upgrade-seen", Message: msg,
			Change: Change{
				Labels:      map[string]*string{p.cfg.StatusLabel.Key: ptr(p.cfg.StatusLabel.WarmingValue)},
				Annotations: ann,
			},
			Events: p.transition("PrewarmUpgradeSeen", msg),
		}, true
	}

	// An upgraded node that is not Ready yet (its network or drivers still starting) did not leave
	// its maintenance without an upgrade: it waits for Ready, or for maxWaitForUpgrade.
	if len(c.s.Maintenance[n.Name]) == 0 && !upgraded && c.s.MaintenanceUnknown == "" {
		leftAt, recorded := recordedTime(c, n, state.LeftMaintenanceAt)
		if !recorded {
			leftAt = c.s.Now
		}
		if c.s.Now.Sub(leftAt) >= p.cfg.CancelAfter.Duration {
			if ruleErr != nil {
				// Whether the node was upgraded is unknown: it may open cold, which a Warning says.
				msg := fmt.Sprintf("left maintenance at %s; upgrade.when failed on the node (%v), so it may have been upgraded: released without pre-warming", state.FormatTime(leftAt), ruleErr)
				a := p.release(c, n, state.ReasonCancelled, msg)
				a.Events = []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmUpgradeRuleError", Message: truncate(msg, 1024)}}
				return a, true
			}
			if kernel, off := p.rule.OffTarget(n, baseline); off {
				// Rebooted, onto a kernel upgrade.kernelVersions does not list: it opens cold.
				msg := fmt.Sprintf("left maintenance at %s after a reboot onto kernel %s, which upgrade.kernelVersions does not list: released without pre-warming", state.FormatTime(leftAt), clip(kernel))
				a := p.release(c, n, state.ReasonCancelled, msg)
				a.Events = []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmKernelNotTargeted", Message: msg}}
				return a, true
			}
			return p.release(c, n, state.ReasonCancelled, fmt.Sprintf("left maintenance at %s without being upgraded", state.FormatTime(leftAt))), true
		}
		if !recorded {
			return Action{
				Node: n.Name, Type: Record, Reason: "left-maintenance",
				Message: fmt.Sprintf("left maintenance before its upgrade; released in %s unless it returns or upgrades", p.cfg.CancelAfter.Duration),
				Change:  Change{Annotations: map[string]*string{state.LeftMaintenanceAt: ptr(c.now)}},
			}, true
		}
	}
	if !hasTaintedAt {
		return p.repairTime(c, n, state.TaintedAt, "maxWaitForUpgrade"), true
	}
	if c.s.Now.Sub(taintedAt) >= p.cfg.MaxWaitForUpgrade.Duration {
		msg := fmt.Sprintf("upgrade not seen within maxWaitForUpgrade (%s); released without pre-warming", p.cfg.MaxWaitForUpgrade.Duration)
		a := p.release(c, n, state.ReasonTimeout, msg)
		a.Events = []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmTimeout", Message: msg}}
		return a, true
	}
	if len(c.s.Maintenance[n.Name]) > 0 && c.s.MaintenanceUnknown == "" {
		if _, ok := n.Annotations[state.LeftMaintenanceAt]; ok {
			return Action{
				Node: n.Name, Type: Record, Reason: "back-in-maintenance", Message: "back in maintenance",
				Change: Change{Annotations: map[string]*string{state.LeftMaintenanceAt: nil}},
			}, true
		}
	}
	if ruleErr != nil {
		return p.problem(c, n, ProblemUpgradeRuleError, "upgrade.when: "+ruleErr.Error())
	}
	if ruleErrorRecorded(n) {
		return Action{
			Node: n.Name, Type: Record, Reason: "upgrade-rule-recovered", Message: "upgrade.when evaluates on the node again",
			Change: Change{Annotations: map[string]*string{state.LastError: nil}},
		}, true
	}
	return p.podProblem(c, n)
}

// ruleErrorRecorded reports whether the node's last-error is an upgrade.when failure. Unlike a
// warmer pod's problem, which stays on record until the node is released, it is cleared once
// the rule evaluates on the node again (a fixed upgrade.when): the node is then simply waiting
// for its upgrade, and status and the node_problems gauge stop reporting the error.
func ruleErrorRecorded(n *corev1.Node) bool {
	return strings.HasPrefix(n.Annotations[state.LastError], ProblemUpgradeRuleError+":")
}

func (p *Planner) planWarming(c *cycle, n *corev1.Node) (Action, bool) {
	if pod := p.warmPod(c, n); pod != nil {
		a := p.release(c, n, state.ReasonWarm, fmt.Sprintf("warmer pod %s is Ready", pod.Name))
		a.WarmPod = pod
		return a, true
	}
	upgradedAt, ok := recordedTime(c, n, state.UpgradedAt)
	if !ok {
		return p.repairTime(c, n, state.UpgradedAt, "maxWaitForWarm"), true
	}
	if c.s.Now.Sub(upgradedAt) >= p.cfg.MaxWaitForWarm.Duration {
		if p.cfg.OnWarmTimeout == config.OnWarmTimeoutKeep {
			return p.problem(c, n, ProblemWarmTimeout, fmt.Sprintf(
				"warmer pod not Ready within maxWaitForWarm (%s); kept tainted (onWarmTimeout: keep)%s",
				p.cfg.MaxWaitForWarm.Duration, p.lastProblemSuffix(c, n)))
		}
		msg := fmt.Sprintf("warmer pod not Ready within maxWaitForWarm (%s); released cold%s",
			p.cfg.MaxWaitForWarm.Duration, p.lastProblemSuffix(c, n))
		a := p.release(c, n, state.ReasonTimeout, msg)
		a.Events = []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmTimeout", Message: msg}}
		return a, true
	}
	return p.podProblem(c, n)
}

// maxClockSkew is how far ahead of the orchestrator's clock a recorded time may be and still be
// trusted: replicas' clocks differ by that little, while a time further ahead (a hand edit, a
// writer with a wrong clock) would put off the timeout that counts from it until then.
const maxClockSkew = 5 * time.Minute

// recordedTime reads a time annotation the planner counts a timeout from; ok is false when it
// is missing, malformed, or further ahead of now than maxClockSkew.
func recordedTime(c *cycle, n *corev1.Node, key string) (time.Time, bool) {
	t, ok := state.Time(n, key)
	if !ok || t.Sub(c.s.Now) > maxClockSkew {
		return time.Time{}, false
	}
	return t, true
}

// timeProblem says what is wrong with a time annotation recordedTime refused: missing,
// malformed, or in the future.
func timeProblem(n *corev1.Node, key string) string {
	v, ok := n.Annotations[key]
	if !ok {
		return "missing"
	}
	if _, parsed := state.Time(n, key); parsed {
		return fmt.Sprintf("in the future (%s)", clip(v))
	}
	return fmt.Sprintf("malformed (%s)", quote(v))
}

// repairTime sets a managed node's missing, malformed or future time annotation (edited by
// hand, or written by a clock far ahead) to now, with a Warning Event: without it the timeout
// that counts from it (timeout, a field name) would fire late or never, and the node could stay
// tainted for good. The timeout counts from now.
func (p *Planner) repairTime(c *cycle, n *corev1.Node, key, timeout string) Action {
	msg := fmt.Sprintf("%s was %s: set to now, so %s counts from now", key, timeProblem(n, key), timeout)
	return Action{
		Node: n.Name, Type: Record, Reason: "repaired", Message: msg,
		Change: Change{Annotations: map[string]*string{key: ptr(c.now)}},
		Events: []Event{{Type: corev1.EventTypeWarning, Reason: "PrewarmStateRepaired", Message: msg}},
	}
}

func (p *Planner) lastProblemSuffix(c *cycle, n *corev1.Node) string {
	if reason, msg := PodProblem(c.problemPods(n)); reason != "" {
		return "; last problem: " + reason + ": " + msg
	}
	return ""
}

// podProblem records a warmer pod problem on the node, once per category. While the problem
// last-error records is still among the pod's, another one is not reported: a pod with two
// failing containers, one of them crash-looping (and so only now and then waiting), would
// otherwise switch between the two at every restart, each time with a new Warning Event.
func (p *Planner) podProblem(c *cycle, n *corev1.Node) (Action, bool) {
	problems := podProblems(c.problemPods(n))
	if len(problems) == 0 {
		return Action{}, false
	}
	for _, pr := range problems {
		if strings.HasPrefix(n.Annotations[state.LastError], pr.reason+":") {
			return Action{}, false
		}
	}
	return p.problem(c, n, problems[0].reason, problems[0].msg)
}

// problem sets last-error and emits a Warning Event, unless last-error already has this reason.
func (p *Planner) problem(_ *cycle, n *corev1.Node, reason, msg string) (Action, bool) {
	if strings.HasPrefix(n.Annotations[state.LastError], reason+":") {
		return Action{}, false
	}
	value := truncate(reason+": "+msg, 1024)
	return Action{
		Node: n.Name, Type: Record, Reason: reason, Message: msg,
		Change: Change{Annotations: map[string]*string{state.LastError: ptr(value)}},
		Events: []Event{{Type: corev1.EventTypeWarning, Reason: "Prewarm" + reason, Message: truncate(msg, 1024)}},
	}, true
}

// release takes the taint and status label off and keeps the record.
func (p *Planner) release(c *cycle, n *corev1.Node, reason, msg string) Action {
	ch := Change{Annotations: map[string]*string{
		state.ReleasedAt:    ptr(c.now),
		state.ReleaseReason: ptr(reason),
	}}
	if t := p.ourTaint(n); state.HasTaint(n, t.Key, t.Effect) {
		ch.RemoveTaint = &t
	}
	// The status label under the key recorded on the node, and under the configured key.
	for _, k := range []string{p.ourStatusLabel(n), p.cfg.StatusLabel.Key} {
		if _, ok := n.Labels[k]; ok {
			if ch.Labels == nil {
				ch.Labels = map[string]*string{}
			}
			ch.Labels[k] = nil
		}
	}
	for _, k := range state.ManagedAnnotations {
		if _, ok := n.Annotations[k]; ok {
			ch.Annotations[k] = nil
		}
	}
	if reason == state.ReasonWarm {
		if _, ok := n.Annotations[state.LastError]; ok {
			ch.Annotations[state.LastError] = nil
		}
	}
	// The maintenances still active are recorded (one may outlast the one the node entered for);
	// with none left, a presence maintenance is marked ended now, saving a patch later.
	// While the NodeMaintenance source is unknown its maintenances are missing from the
	// snapshot: those recorded on the node are kept as recorded (one left out would be taken for
	// a new maintenance once the source is read, and the node tainted again), and the presence
	// sources' are recorded as they are now, but for the next rule.
	// A cordon or label recorded while a NodeMaintenance recorded too lasts (or may, while the
	// source is unknown) is kept even if it is not there now: it is part of that NodeMaintenance
	// (see recordPresenceLeft and releasedFor).
	// A node outside the pool (a left-pool release) has no maintenances in the snapshot at all:
	// the sources read pool nodes only. Its record is kept as it is: marked ended, a cordon or
	// label still there would count as a new maintenance if the node came back to the pool in it
	// (a pool label rolled back mid-maintenance), and the node would be tainted again.
	active := c.s.Maintenance[n.Name]
	if c.s.MaintenanceUnknown != "" {
		active = slices.Clone(active)
		for _, id := range recordedIDs(n) {
			if !isPresenceID(id) {
				active = append(active, Maintenance{Source: SourceNodeMaintenance, ID: id})
			}
		}
	}
	var later []Maintenance
	if p.upgradeToCome(n, reason) {
		active, later = p.upgradedFor(n, active, c.s.Maintenance[n.Name])
	}
	if recorded := recordedIDs(n); underRecordedNodeMaintenance(recorded, active) {
		active = slices.Clone(active)
		for _, id := range recorded {
			if p.presenceRead(id) {
				active = append(active, Maintenance{Source: id, ID: id})
			}
		}
	}
	switch {
	case !p.InPool(n):
	case len(active) > 0:
		if ids := maintenanceIDs(active); ids != n.Annotations[state.MaintenanceID] {
			ch.Annotations[state.MaintenanceID] = ptr(ids)
		}
		if _, ok := n.Annotations[state.MaintenanceEnded]; ok {
			// Marked when the upgrade was seen (upgradeRecord): the record is now what lasts.
			ch.Annotations[state.MaintenanceEnded] = nil
		}
	case slices.ContainsFunc(recordedIDs(n), isPresenceID):
		ch.Annotations[state.MaintenanceEnded] = ptr(c.now)
	}
	if len(later) > 0 {
		msg += fmt.Sprintf("; %s began after the upgrade was seen: the node is tainted again for it", describeAll(later))
		cordoned := slices.ContainsFunc(later, func(m Maintenance) bool { return m.Source == SourceCordoned })
		if cordoned && c.s.MaintenanceUnknown != "" && underRecordedNodeMaintenance(recordedIDs(n), active) {
			// Left out because the NodeMaintenance objects could not be read: if one the node
			// records lasts, the cordon is part of it (releasedFor), and the node stays open.
			msg += ", the cordon only if no NodeMaintenance it records lasts"
		}
	}
	a := Action{Node: n.Name, Type: Release, Reason: reason, Message: msg, Change: ch}
	released := Event{Type: corev1.EventTypeNormal, Reason: "PrewarmReleased", Message: fmt.Sprintf("released (%s): %s", reason, msg)}
	if reason == state.ReasonExternal {
		// An operator removed the taint: always said, so that the record shows who opened the node.
		a.Events = []Event{released}
	} else {
		a.Events = p.transition(released.Reason, released.Message)
	}
	return a
}

// transition returns the Normal Event of a routine transition, or none unless events.transitions
// asks for them: by default a changed node costs one patch and no Event.
func (p *Planner) transition(reason, msg string) []Event {
	if !p.cfg.Events.Transitions {
		return nil
	}
	return []Event{{Type: corev1.EventTypeNormal, Reason: reason, Message: msg}}
}

// warmPod returns a warmer pod that proves the node warm: on this node, owned by the DaemonSet,
// of its current revision, Ready, not terminating, and not the pod that was already there when
// the node was tainted unless its containers restarted since.
func (p *Planner) warmPod(c *cycle, n *corev1.Node) *corev1.Pod {
	if c.revision == "" {
		return nil
	}
	preUID := n.Annotations[state.WarmerPodUID]
	preRestarts, known := state.Int(n, state.WarmerPodRestarts)
	for _, pod := range c.pods[n.Name] {
		if pod.DeletionTimestamp != nil || pod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != c.revision || !state.PodReady(pod) || !readyOnThisNode(pod, n) {
			continue
		}
		// The pod that was already here counts only once its containers restarted (the reboot);
		// with its restart count unreadable or negative (edited by hand) that cannot be told,
		// so it does not count: a new pod, or the timeout, releases the node.
		if preUID != "" && string(pod.UID) == preUID && (!known || preRestarts < 0 || state.PodRestarts(pod) <= preRestarts) {
			continue
		}
		return pod
	}
	return nil
}

// problemReasons maps container waiting reasons that mean "this pull is failing" to the category
// recorded in last-error. Pull errors alternate between ErrImagePull and ImagePullBackOff; one
// category keeps that from emitting an Event every cycle.
var problemReasons = map[string]string{
	"ErrImagePull":               "ImagePull",
	"ImagePullBackOff":           "ImagePull",
	"ErrImageNeverPull":          "ImagePull",
	"RegistryUnavailable":        "ImagePull",
	"SignatureValidationFailed":  "ImagePull",
	"InvalidImageName":           "InvalidImageName",
	"CreateContainerConfigError": "CreateContainerConfigError",
	"CreateContainerError":       "CreateContainerError",
	"RunContainerError":          "RunContainerError",
	"CrashLoopBackOff":           "CrashLoopBackOff",
	"PreCreateHookError":         "CreateContainerError",
	"PreStartHookError":          "RunContainerError",
}

// Problem reasons the planner records in last-error besides the pod problem categories.
const (
	ProblemUnschedulable    = "Unschedulable"
	ProblemWarmTimeout      = "WarmTimeout"
	ProblemUpgradeRuleError = "UpgradeRuleError"
	// ProblemOther stands for a last-error whose reason the planner does not write (an
	// annotation edited by hand, or written by another version).
	ProblemOther = "other"
)

// ProblemReasons returns, sorted, every reason the planner records in last-error.
func ProblemReasons() []string {
	out := []string{ProblemUnschedulable, ProblemWarmTimeout, ProblemUpgradeRuleError}
	for _, cat := range problemReasons {
		out = append(out, cat)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// RecordedProblem returns the reason of the problem recorded in node's last-error annotation: one
// of ProblemReasons, ProblemOther for an annotation of another form, or "" when there is none.
func RecordedProblem(node *corev1.Node) string {
	v, ok := node.Annotations[state.LastError]
	if !ok {
		return ""
	}
	if reason, _, found := strings.Cut(v, ":"); found && knownProblems[reason] {
		return reason
	}
	return ProblemOther
}

var knownProblems = func() map[string]bool {
	known := map[string]bool{}
	for _, r := range ProblemReasons() {
		known[r] = true
	}
	return known
}()

// PodProblem returns the category and message of the first problem among the pods' containers
// (init containers first), or "" when there is none. An unschedulable pod is a problem too.
func PodProblem(pods []*corev1.Pod) (string, string) {
	if problems := podProblems(pods); len(problems) > 0 {
		return problems[0].reason, problems[0].msg
	}
	return "", ""
}

// PodNode returns the node a warmer pod is for: spec.nodeName once the scheduler has bound it,
// and before that the node its DaemonSet names in the pod's required node affinity (the
// DaemonSet controller gives each pod it creates a matchFields term on metadata.name), so that a
// pod the scheduler cannot place is seen, with its Unschedulable condition, on the node it waits
// for. "" for a pod that names no single node.
func PodNode(pod *corev1.Pod) string {
	if pod.Spec.NodeName != "" {
		return pod.Spec.NodeName
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	node := ""
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		named := ""
		for _, f := range term.MatchFields {
			if f.Key == metav1.ObjectNameField && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				named = f.Values[0]
			}
		}
		// The terms are ORed: the pod is for one node only if every term names the same one.
		if named == "" || (node != "" && named != node) {
			return ""
		}
		node = named
	}
	return node
}

type podProblemOf struct{ reason, msg string }

// podProblems returns every problem among the pods' containers, in PodProblem's order.
func podProblems(pods []*corev1.Pod) []podProblemOf {
	var out []podProblemOf
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		statuses := append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...)
		for _, cs := range statuses {
			if w := cs.State.Waiting; w != nil {
				if cat, ok := problemReasons[w.Reason]; ok {
					out = append(out, podProblemOf{cat, fmt.Sprintf("pod %s container %s (image %s): %s: %s", pod.Name, cs.Name, cs.Image, w.Reason, w.Message)})
				}
			}
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
				out = append(out, podProblemOf{ProblemUnschedulable, fmt.Sprintf("pod %s: %s", pod.Name, cond.Message)})
			}
		}
	}
	return out
}

// livePod returns a pod of the node's that the kubelet runs: bound to the node, not terminating,
// not finished. A pod the scheduler has not bound has pulled nothing there, and one that failed
// (evicted) or succeeded runs nothing: the DaemonSet controller may keep it beside the pod that
// replaced it, which is the one to record.
func livePod(pods []*corev1.Pod) *corev1.Pod {
	for _, pod := range pods {
		if pod.DeletionTimestamp == nil && pod.Spec.NodeName != "" &&
			pod.Status.Phase != corev1.PodFailed && pod.Status.Phase != corev1.PodSucceeded {
			return pod
		}
	}
	return nil
}

// primary picks the maintenance an entry is said to be for, in its reason and message (the node
// records every active one): objects first (by name), then labels, then cordons.
func primary(ms []Maintenance) Maintenance {
	order := map[string]int{SourceNodeMaintenance: 0, SourceNodeLabel: 1, SourceCordoned: 2}
	best := ms[0]
	for _, m := range ms[1:] {
		if order[m.Source] < order[best.Source] || (m.Source == best.Source && m.Object < best.Object) {
			best = m
		}
	}
	return best
}

// describeAll describes maintenances for a message: "nodeMaintenance nm-2, nodeLabel".
func describeAll(ms []Maintenance) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = describe(m)
	}
	return strings.Join(out, ", ")
}

func describe(m Maintenance) string {
	if m.Object != "" {
		return m.Source + " " + m.Object
	}
	return m.Source
}

func (p *Planner) taint() corev1.Taint {
	return corev1.Taint{Key: p.cfg.Taint.Key, Value: p.cfg.Taint.Value, Effect: p.cfg.Taint.Effect}
}

func taintString(t corev1.Taint) string { return fmt.Sprintf("%s=%s:%s", t.Key, t.Value, t.Effect) }

func ptr(s string) *string { return &s }

// maxQuoted bounds an annotation value (editable by hand, up to the API server's 256 KiB for all
// of a node's annotations) that a note, an action's message or an Event quotes: enough for any
// value the product writes, so that an odd one does not make a log line of its size every cycle.
const maxQuoted = 128

// quote returns v quoted as %q does, with at most maxQuoted bytes between the quotes (escapes
// included); a longer value is cut at a character, then "..." and its full length in bytes.
func quote(v string) string {
	q := strconv.Quote(v)
	if len(q) <= maxQuoted+2 {
		return q
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); {
		_, w := utf8.DecodeRuneInString(v[i:])
		esc := strconv.Quote(v[i : i+w])
		esc = esc[1 : len(esc)-1]
		if b.Len()-1+len(esc) > maxQuoted {
			break
		}
		b.WriteString(esc)
		i += w
	}
	fmt.Fprintf(&b, `"... (%d bytes)`, len(v))
	return b.String()
}

// clip is quote for a value shown unquoted: cut to at most maxQuoted bytes at a character, then
// "..." and its full length in bytes.
func clip(v string) string {
	if len(v) <= maxQuoted {
		return v
	}
	return fmt.Sprintf("%s... (%d bytes)", prefix(v, maxQuoted), len(v))
}

// prefix is the longest start of v of at most n bytes that ends at a character boundary.
func prefix(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return prefix(s, n-3) + "..."
}

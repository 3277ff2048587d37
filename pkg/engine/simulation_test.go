package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// The simulation drives the planner and the engine's write path through long random histories of
// a pool: upgrade pipelines that announce maintenance through each source (NodeMaintenance
// objects, a label, a cordon) and reboot nodes onto a new OS, the warmer DaemonSet's controller
// and the kubelets pulling its images, operators who release nodes by hand, nodes that join,
// leave the pool and go away, other writers racing the orchestrator's patches, writes that fail
// or lose their answer, and cycles that cannot read the NodeMaintenance objects (a few at a time:
// a list that fails, an informer syncing; they must enter no node and cancel none still in
// maintenance, and keep the objects recorded on a node they release). The simulated world knows what the orchestrator can only infer (which
// disks hold the images, which maintenance still has its reboot to come); every patch is checked
// against the design's invariants as it lands, and at the end of each history every node must
// come out of maintenance once the pipelines have finished.
//
// A failure prints the seed; SIMULATION_SEED=<seed> replays that history alone (with
// SIMULATION_LOG=<n>, the last n events of the world rather than 60), and SIMULATION_HISTORIES=<n>
// runs n histories rather than 40 (seeds from SIMULATION_FIRST, default 1).

const (
	simNodes    = 10
	simSteps    = 300
	simHistory  = 40 // histories per run
	simDrain    = 120
	oldKernel   = "5.15.0-1"
	newKernel   = "6.8.0-2"
	maintLabel  = "upgrade"
	maintValue  = "pending"
	otherOwner  = "prewarm/other"
	otherNode   = "x-other"
	foreignKey  = "example.com/note"
	foreignTnt  = "dedicated"
	heartbeatAn = "example.com/heartbeat"
)

func TestSimulatedHistories(t *testing.T) {
	histories := simHistory
	if v := os.Getenv("SIMULATION_HISTORIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SIMULATION_HISTORIES=%q: not a positive number", v)
		}
		histories = n
	}
	first := uint64(1)
	if v := os.Getenv("SIMULATION_FIRST"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SIMULATION_FIRST=%q: %v", v, err)
		}
		first = n
	}
	seeds := make([]uint64, histories)
	for i := range seeds {
		seeds[i] = first + uint64(i)
	}
	if v := os.Getenv("SIMULATION_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SIMULATION_SEED=%q: %v", v, err)
		}
		seeds = []uint64{seed}
	}
	total := map[string]int{}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			for k, v := range newSim(t, seed).run() {
				total[k] += v
			}
		})
	}
	// The checks of each history hold as well for an orchestrator that does nothing: across
	// histories, nodes must have been entered, seen upgraded and released warm.
	if len(seeds) >= 10 && !t.Failed() {
		byType := map[string]int{}
		for k, v := range total {
			byType[strings.Fields(k)[0]] += v
		}
		for _, what := range []string{"enter", "upgraded", "adopt"} {
			if byType[what] == 0 {
				t.Errorf("no %s action in %d histories: %v", what, len(seeds), total)
			}
		}
		// About 57% are (the histories time out, cancel and release by hand often on purpose).
		if warm := total["release "+state.ReasonWarm]; warm*3 < byType["release"] {
			t.Errorf("%d of %d releases warm in %d histories: a third at least must be, %v", warm, byType["release"], len(seeds), total)
		}
	}
}

// pipelineOp is one maintenance of one node by an upgrade pipeline: it announces it through
// signals (wants), reboots the node onto the new OS (which empties its image cache), then
// withdraws the signals; a NodeMaintenance object may linger after the rest.
type pipelineOp struct {
	id       int
	wants    []string
	upgraded bool
	// abandoned: the pipeline gave up before the reboot.
	abandoned bool
}

// nmObject is a NodeMaintenance object; op is nil once it lingers after its maintenance.
type nmObject struct {
	uid, name, node string
	op              *pipelineOp
	seq             int       // when it was created, in the order of events
	created         time.Time // its creationTimestamp
}

// nodeTruth is what the world knows about a node and the orchestrator has to infer.
type nodeTruth struct {
	op *pipelineOp
	// warmRev is the warmer revision whose images are on the node's disk since its last upgrade
	// ("" when none): a pod of that revision became Ready after the reboot.
	warmRev string
	// releasedWith are the identities of the maintenance signals the node had when the
	// orchestrator last released it, less those it may taint the node again for.
	releasedWith map[string]bool
	// label and cordon are the identities of the node's label and cordon signals ("" when none).
	label, cordon string
	// labelSeq, cordonSeq and warmingSeq order the label's and the cordon's arrival and the
	// node's last move to warming.
	labelSeq, cordonSeq, warmingSeq int
	// warmingBoot is the node's boot ID when it last went warming.
	warmingBoot string
	// atSnapshot are the identities of the maintenance signals on the node when the cycle being
	// written read it.
	atSnapshot map[string]bool
	// upgradedSinceEntry: the node rebooted onto a new OS since it was last tainted.
	upgradedSinceEntry bool
}

type sim struct {
	t      *testing.T
	seed   uint64
	rng    *rand.Rand
	cfg    *config.Config
	eng    *Engine
	client *fake.Clientset
	clock  *clocktesting.FakePassiveClock
	now    time.Time
	keep   bool // the DaemonSet keeps pods on released nodes (keepAfterRelease)

	nodes   map[string]*corev1.Node
	truth   map[string]*nodeTruth
	nms     map[string]*nmObject
	ds      *appsv1.DaemonSet
	revs    []*appsv1.ControllerRevision
	hash    string
	pods    map[string]*corev1.Pod
	rv      int
	seq     int
	drain   bool
	inWrite bool
	// unknown: the NodeMaintenance source is unknown to the cycles (a list that fails, an
	// informer syncing), for a few cycles at a time.
	unknown   bool
	lastNotes map[string][]string
	// violation is the first invariant a patch broke.
	violation string
	log       []string
	stats     map[string]int
}

func newSim(t *testing.T, seed uint64) *sim {
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)), now: t0,
		nodes: map[string]*corev1.Node{}, truth: map[string]*nodeTruth{}, nms: map[string]*nmObject{},
		pods: map[string]*corev1.Pod{}, stats: map[string]int{},
	}
	cfg := config.Default()
	cfg.Instance = "prewarm/sim"
	cfg.Pool.NodeSelector = map[string]string{"pool": "notebooks"}
	m := &cfg.Maintenance
	for m.NodeMaintenance.Enabled, m.NodeLabel.Enabled, m.Cordoned.Enabled = false, false, false; !m.NodeMaintenance.Enabled && !m.NodeLabel.Enabled && !m.Cordoned.Enabled; {
		m.NodeMaintenance.Enabled, m.NodeLabel.Enabled, m.Cordoned.Enabled = s.chance(0.6), s.chance(0.4), s.chance(0.4)
	}
	if m.NodeLabel.Enabled {
		m.NodeLabel.Selector = maintLabel + "=" + maintValue
	}
	if s.chance(0.4) {
		cfg.Upgrade.KernelVersions = []string{newKernel}
	}
	cfg.MaxConcurrent = []intstr.IntOrString{intstr.FromInt32(0), intstr.FromInt32(2), intstr.FromString("30%")}[s.rng.IntN(3)]
	if s.chance(0.3) {
		cfg.OnWarmTimeout = config.OnWarmTimeoutKeep
	}
	cfg.Events.Transitions = s.chance(0.5)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("seed %d: configuration: %v", seed, err)
	}
	s.cfg, s.keep = cfg, s.chance(0.3)
	s.logf("config: sources nm=%v label=%v cordon=%v kernelVersions=%v maxConcurrent=%s onWarmTimeout=%s keepAfterRelease=%v",
		m.NodeMaintenance.Enabled, m.NodeLabel.Enabled, m.Cordoned.Enabled, cfg.Upgrade.KernelVersions,
		cfg.MaxConcurrent.String(), cfg.OnWarmTimeout, s.keep)

	s.ds = tu.DaemonSet(cfg.Warmer.Namespace, cfg.Warmer.DaemonSetName)
	s.newRevision()
	for i := range simNodes {
		s.addNode(fmt.Sprintf("n%02d", i), false)
	}
	other := s.addNode(otherNode, false)
	other.Spec.Taints = append(other.Spec.Taints, corev1.Taint{Key: cfg.Taint.Key, Value: cfg.Taint.Value, Effect: cfg.Taint.Effect})
	other.Labels[cfg.StatusLabel.Key] = cfg.StatusLabel.Value
	other.Annotations[state.Phase] = state.PhaseTainted
	other.Annotations[state.Owner] = otherOwner

	s.clock = clocktesting.NewFakePassiveClock(s.now)
	s.client = fake.NewClientset(s.ds.DeepCopy())
	s.client.PrependReactor("get", "nodes", s.getNode)
	s.client.PrependReactor("patch", "nodes", s.patchNode)
	e, err := New(Options{
		Config: cfg, Client: s.client, Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
		Clock: s.clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		EventClient: fake.NewClientset(), Workers: 1, // one write at a time: a history replays from its seed
	})
	if err != nil {
		t.Fatal(err)
	}
	s.eng = e
	return s
}

func (s *sim) chance(p float64) bool { return s.rng.Float64() < p }

func (s *sim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%s %s", s.now.Sub(t0).Round(time.Second), fmt.Sprintf(format, args...)))
}

// failf stops the history with the world's log, most recent last.
//
// Called from a patch (the engine's write goroutine), it records the failure for the cycle to
// report once the writes are done: the test cannot stop from another goroutine.
func (s *sim) failf(format string, args ...any) {
	s.t.Helper()
	if s.inWrite {
		if s.violation == "" {
			s.violation = fmt.Sprintf(format, args...)
		}
		return
	}
	tail := s.log
	if n, _ := strconv.Atoi(os.Getenv("SIMULATION_LOG")); len(tail) > max(n, 60) {
		tail = tail[len(tail)-max(n, 60):]
	}
	s.t.Fatalf("seed %d (replay with SIMULATION_SEED=%d): %s\nlast events:\n  %s", s.seed, s.seed,
		fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
}

// run plays the history, checking it as it goes, and returns how many of each kind of write
// (type and reason) and event it counted.
func (s *sim) run() map[string]int {
	for step := range simSteps {
		s.advance()
		s.world()
		s.cycle(step)
	}
	s.drain = true
	for range simDrain {
		s.now = s.now.Add(time.Minute)
		s.world()
		s.cycle(-1)
	}
	// A node whose upgrade was first seen late in the drain, with a warmer pod that restarted
	// before its entry (which does not count; no reboot comes), waits out maxWaitForWarm: drain
	// on until that timeout has released it (with onWarmTimeout: keep it stays, as checked below).
	// Only for that case: any other node still warming now is stuck (the timeout would hide it).
	for _, name := range s.nodeNames() {
		if n := s.nodes[name]; name != otherNode && state.PhaseOf(n) == state.PhaseWarming && !s.onItsEntryPod(name) {
			s.failf("node %s still warming after the drain: annotations %v; warmer pod %s; plan notes %v",
				name, n.Annotations, s.podString(name), s.lastNotes[name])
		}
	}
	for end := s.now.Add(s.cfg.MaxWaitForWarm.Duration); s.now.Before(end) && s.cfg.OnWarmTimeout != config.OnWarmTimeoutKeep && s.warmingOnItsEntryPod(); {
		s.now = s.now.Add(time.Minute)
		s.world()
		s.cycle(-1)
	}
	for _, name := range s.nodeNames() {
		n := s.nodes[name]
		if name == otherNode || (state.PhaseOf(n) == "" && n.Labels["pool"] != "notebooks") {
			continue // not ours: another installation's, or a node that joined with the taint elsewhere
		}
		if pod := s.pods[name]; s.cfg.OnWarmTimeout == config.OnWarmTimeoutKeep && state.PhaseOf(n) == state.PhaseWarming &&
			pod != nil && string(pod.UID) == n.Annotations[state.WarmerPodUID] {
			// Tainted again on a target kernel (its upgrade came just before a cycle saw its
			// maintenance), with a warmer pod that restarted before the entry: that pod does not
			// count, no reboot comes, and onWarmTimeout: keep holds it (fail-closed) for an operator.
			s.stats["held for an operator"]++
			continue
		}
		if ph := state.PhaseOf(n); ph != "" || s.ourTaint(n) || n.Labels[s.cfg.StatusLabel.Key] != "" {
			s.failf("node %s still managed after every pipeline finished: phase %q, taints %v, labels %v, annotations %v; warmer pod %s; plan notes %v",
				name, ph, n.Spec.Taints, n.Labels, n.Annotations, s.podString(name), s.lastNotes[name])
		}
	}
	s.t.Logf("seed %d: %v", s.seed, s.stats)
	return s.stats
}

// warmingOnItsEntryPod reports whether a node is warming with the warmer pod recorded at its
// entry as its current one: the case only maxWaitForWarm releases (see run). Any other node still
// warming at the end of the drain fails the check after it.
func (s *sim) warmingOnItsEntryPod() bool {
	for name, n := range s.nodes {
		if state.PhaseOf(n) == state.PhaseWarming && s.onItsEntryPod(name) {
			return true
		}
	}
	return false
}

// onItsEntryPod reports whether the node's warmer pod is the one recorded at its entry.
func (s *sim) onItsEntryPod(name string) bool {
	pod := s.pods[name]
	return pod != nil && string(pod.UID) == s.nodes[name].Annotations[state.WarmerPodUID]
}

func (s *sim) advance() {
	switch r := s.rng.Float64(); {
	case r < 0.7:
		s.now = s.now.Add(time.Duration(5+s.rng.IntN(115)) * time.Second)
	case r < 0.95:
		s.now = s.now.Add(time.Duration(2+s.rng.IntN(28)) * time.Minute)
	default:
		s.now = s.now.Add(time.Duration(1+s.rng.IntN(25)) * time.Hour)
	}
}

// world moves everything but the orchestrator one step on.
func (s *sim) world() {
	for _, name := range s.nodeNames() {
		if name == otherNode {
			continue
		}
		s.pipeline(name, true)
		if s.drain {
			continue
		}
		n := s.nodes[name]
		switch r := s.rng.Float64(); {
		case r < 0.01 && s.ourTaint(n):
			s.logf("%s: an operator removes the taint", name)
			s.removeOurTaint(n)
		case r < 0.02 && n.Labels[s.cfg.StatusLabel.Key] != "" && n.Labels["pool"] == "notebooks":
			s.logf("%s: an operator removes the status label", name)
			delete(n.Labels, s.cfg.StatusLabel.Key)
			s.touch(n)
		case r < 0.025 && (state.PhaseOf(n) == "" || n.Labels[s.cfg.StatusLabel.Key] != ""):
			// (A managed node without its status label outside the pool is not listed: the
			// orchestrator lists the pool's nodes and the status label's. Nor is its label removed
			// by hand out there.)
			if n.Labels["pool"] == "notebooks" {
				s.logf("%s: leaves the pool", name)
				n.Labels["pool"] = "batch"
			} else {
				s.logf("%s: back in the pool", name)
				n.Labels["pool"] = "notebooks"
			}
			s.touch(n)
		case r < 0.028 && !strings.HasPrefix(name, "n"):
			s.logf("%s: deleted", name)
			delete(s.nodes, name)
			delete(s.truth, name)
			delete(s.pods, name)
		case r < 0.05:
			s.setReady(n, !nodeReady(n))
		case r < 0.06 && s.noPendingUpgrade(name):
			s.reboot(name, false)
		}
	}
	if !s.drain {
		if s.chance(0.02) {
			s.seq++
			name := fmt.Sprintf("j%03d", s.seq)
			tainted := s.chance(0.6)
			s.logf("%s: joins the pool (tainted %v)", name, tainted)
			n := s.addNode(name, true)
			if tainted {
				n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: s.cfg.Taint.Key, Value: s.cfg.Taint.Value, Effect: s.cfg.Taint.Effect})
			}
		}
		if s.chance(0.01) {
			s.ds.Generation++
			s.logf("warmer DaemonSet changed (generation %d)", s.ds.Generation)
		}
	} else {
		for _, name := range s.nodeNames() {
			s.setReady(s.nodes[name], true)
		}
	}
	for _, uid := range slices.Sorted(maps.Keys(s.nms)) {
		if nm := s.nms[uid]; nm.op == nil && (s.drain || s.chance(0.1)) {
			s.logf("%s: lingering NodeMaintenance %s deleted", nm.node, nm.name)
			delete(s.nms, uid)
		}
	}
	s.daemonSetController()
	s.kubelets()
}

// pipeline moves the node's maintenance on: announce, reboot (unless mayReboot is false),
// withdraw; or starts one.
func (s *sim) pipeline(name string, mayReboot bool) {
	tr := s.truth[name]
	n := s.nodes[name]
	if tr.op == nil {
		if s.drain || !s.chance(0.04) || n.Labels["pool"] != "notebooks" {
			return
		}
		if len(s.cfg.Upgrade.KernelVersions) > 0 && n.Status.NodeInfo.KernelVersion == newKernel {
			return // nothing left to upgrade to
		}
		s.seq++
		op := &pipelineOp{id: s.seq}
		for len(op.wants) == 0 {
			for _, src := range []string{plan.SourceNodeMaintenance, plan.SourceNodeLabel, plan.SourceCordoned} {
				if s.sourceEnabled(src) && s.chance(0.6) {
					op.wants = append(op.wants, src)
				}
			}
		}
		tr.op = op
		s.logf("%s: maintenance %d begins (%v)", name, op.id, op.wants)
		return
	}
	op := tr.op
	present := s.signals(name)
	if !op.upgraded && !op.abandoned {
		var missing []string
		for _, src := range op.wants {
			if !present[src] {
				missing = append(missing, src)
			}
		}
		switch {
		case len(missing) > 0 && s.chance(0.6):
			s.addSignal(name, missing[s.rng.IntN(len(missing))])
		case len(present) > 0 && s.chance(0.3) && nodeReady(n) && mayReboot:
			s.reboot(name, true)
			op.upgraded = true
		case !s.drain && s.chance(0.02):
			s.logf("%s: maintenance %d abandoned", name, op.id)
			op.abandoned = true
		case s.drain && len(present) > 0 && nodeReady(n) && mayReboot:
			s.reboot(name, true)
			op.upgraded = true
		case s.drain && len(present) == 0:
			op.abandoned = true
		}
		return
	}
	if len(present) == 0 {
		s.logf("%s: maintenance %d over", name, op.id)
		tr.op = nil
		return
	}
	if !s.drain && !s.chance(0.4) {
		return
	}
	srcs := slices.Sorted(maps.Keys(present))
	s.removeSignal(name, srcs[s.rng.IntN(len(srcs))], op)
}

func (s *sim) sourceEnabled(src string) bool {
	m := s.cfg.Maintenance
	switch src {
	case plan.SourceNodeMaintenance:
		return m.NodeMaintenance.Enabled
	case plan.SourceNodeLabel:
		return m.NodeLabel.Enabled
	}
	return m.Cordoned.Enabled
}

// signals are the current maintenance's signals present on the node.
func (s *sim) signals(name string) map[string]bool {
	out := map[string]bool{}
	tr, n := s.truth[name], s.nodes[name]
	for _, nm := range s.nms {
		if nm.node == name && nm.op != nil && nm.op == tr.op {
			out[plan.SourceNodeMaintenance] = true
		}
	}
	if n.Labels[maintLabel] == maintValue {
		out[plan.SourceNodeLabel] = true
	}
	if n.Spec.Unschedulable {
		out[plan.SourceCordoned] = true
	}
	return out
}

func (s *sim) addSignal(name, src string) {
	tr, n := s.truth[name], s.nodes[name]
	s.seq++
	switch src {
	case plan.SourceNodeMaintenance:
		nm := &nmObject{uid: fmt.Sprintf("nm-uid-%d", s.seq), name: fmt.Sprintf("nm-%d", s.seq), node: name, op: tr.op, seq: s.seq, created: s.now}
		s.nms[nm.uid] = nm
		s.logf("%s: NodeMaintenance %s created", name, nm.name)
		return
	case plan.SourceNodeLabel:
		n.Labels[maintLabel] = maintValue
		tr.label, tr.labelSeq = fmt.Sprintf("label-%d", s.seq), s.seq
	case plan.SourceCordoned:
		n.Spec.Unschedulable = true
		tr.cordon, tr.cordonSeq = fmt.Sprintf("cordon-%d", s.seq), s.seq
		// (A cordon that comes while a NodeMaintenance the node was released for lasts is part
		// of it, if the orchestrator sees both: pkg/plan's presence tests cover that rule. Here
		// the node may be tainted for it.)
	}
	s.logf("%s: %s added", name, src)
	s.touch(n)
}

func (s *sim) removeSignal(name, src string, op *pipelineOp) {
	tr, n := s.truth[name], s.nodes[name]
	switch src {
	case plan.SourceNodeMaintenance:
		for _, uid := range slices.Sorted(maps.Keys(s.nms)) {
			nm := s.nms[uid]
			if nm.node != name || nm.op != op {
				continue
			}
			if s.chance(0.5) {
				s.logf("%s: NodeMaintenance %s lingers", name, nm.name)
				nm.op = nil
			} else {
				s.logf("%s: NodeMaintenance %s deleted", name, nm.name)
				delete(s.nms, uid)
			}
		}
		return
	case plan.SourceNodeLabel:
		delete(n.Labels, maintLabel)
		tr.label = ""
	case plan.SourceCordoned:
		n.Spec.Unschedulable = false
		tr.cordon = ""
	}
	s.logf("%s: %s removed", name, src)
	s.touch(n)
}

// activeIDs are the identities of every maintenance signal on the node, lingering ones included.
func (s *sim) activeIDs(name string) map[string]bool {
	out := map[string]bool{}
	tr := s.truth[name]
	for _, nm := range s.nms {
		if nm.node == name {
			out[nm.uid] = true
		}
	}
	if tr.label != "" {
		out[tr.label] = true
	}
	if tr.cordon != "" {
		out[tr.cordon] = true
	}
	return out
}

func (s *sim) noPendingUpgrade(name string) bool {
	op := s.truth[name].op
	return op == nil || op.upgraded || op.abandoned
}

// reboot restarts the node, onto a new OS when upgrade is set: the image cache is then empty.
func (s *sim) reboot(name string, upgrade bool) {
	n, tr := s.nodes[name], s.truth[name]
	s.seq++
	n.Status.NodeInfo.BootID = fmt.Sprintf("boot-%d", s.seq)
	if upgrade {
		if len(s.cfg.Upgrade.KernelVersions) > 0 {
			n.Status.NodeInfo.KernelVersion = newKernel
		} else {
			n.Status.NodeInfo.KernelVersion = fmt.Sprintf("6.%d.0-1", s.seq)
		}
		tr.warmRev = ""
		tr.upgradedSinceEntry = true
		s.logf("%s: upgraded (kernel %s)", name, n.Status.NodeInfo.KernelVersion)
	} else {
		s.logf("%s: rebooted", name)
	}
	if pod := s.pods[name]; pod != nil {
		s.setPodReady(pod, false)
		pod.Status.ContainerStatuses[0].RestartCount++
	}
	s.touch(n)
}

func (s *sim) addNode(name string, joined bool) *corev1.Node {
	n := tu.Node(name,
		tu.WithLabels("pool", "notebooks", "team", "a"),
		tu.WithAnnotations(foreignKey, "kept"),
		tu.WithTaint(foreignTnt, "x", corev1.TaintEffectPreferNoSchedule),
		tu.WithKernel(oldKernel))
	if joined && len(s.cfg.Upgrade.KernelVersions) > 0 && s.chance(0.5) {
		n.Status.NodeInfo.KernelVersion = newKernel
	}
	s.nodes[name] = n
	s.truth[name] = &nodeTruth{releasedWith: map[string]bool{}}
	s.touch(n)
	return n
}

func (s *sim) touch(n *corev1.Node) {
	s.rv++
	n.ResourceVersion = strconv.Itoa(s.rv)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *sim) setReady(n *corev1.Node, ready bool) {
	if nodeReady(n) == ready {
		return
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
	s.logf("%s: Ready=%s", n.Name, st)
	s.touch(n)
}

func (s *sim) ourTaint(n *corev1.Node) bool {
	return state.HasTaint(n, s.cfg.Taint.Key, s.cfg.Taint.Effect)
}

func (s *sim) removeOurTaint(n *corev1.Node) {
	n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool {
		return t.Key == s.cfg.Taint.Key && t.Effect == s.cfg.Taint.Effect
	})
	s.touch(n)
}

func (s *sim) newRevision() {
	s.seq++
	s.hash = fmt.Sprintf("rev%d", s.seq)
	r := tu.Revision(s.ds, int64(len(s.revs)+1), s.hash)
	maps.Copy(r.Labels, s.ds.Spec.Selector.MatchLabels) // as the DaemonSet controller labels them
	s.revs = append(s.revs, r)
	s.ds.Status.ObservedGeneration = s.ds.Generation
}

// daemonSetController runs the warmer pods the DaemonSet's node affinity asks for (see the
// chart's warmer template): on pool nodes labelled warming, on pool nodes labelled upgrading that
// run a target kernel, and with keepAfterRelease on pool nodes without the status label. It
// replaces pods of an old
// revision and deletes those whose node no longer matches.
func (s *sim) daemonSetController() {
	if s.ds.Status.ObservedGeneration < s.ds.Generation {
		if !s.chance(0.5) {
			return
		}
		s.newRevision()
		s.logf("warmer DaemonSet at revision %s", s.hash)
	}
	for _, name := range s.nodeNames() {
		n := s.nodes[name]
		pod := s.pods[name]
		if !s.drain && !s.chance(0.7) {
			continue
		}
		if pod != nil && (!s.wantsPod(n) || pod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != s.hash) {
			s.logf("%s: warmer pod %s deleted", name, pod.UID)
			delete(s.pods, name)
			pod = nil
		}
		if pod == nil && s.wantsPod(n) {
			s.seq++
			pod = tu.Pod(s.ds, name, s.hash, tu.WithUID(fmt.Sprintf("pod-%d", s.seq)), tu.Restarts(0))
			s.pods[name] = pod
			s.logf("%s: warmer pod %s created (%s)", name, pod.UID, s.hash)
		}
	}
}

func (s *sim) wantsPod(n *corev1.Node) bool {
	if n.Labels["pool"] != "notebooks" || n.Name == otherNode {
		return false
	}
	switch v := n.Labels[s.cfg.StatusLabel.Key]; {
	case v == s.cfg.StatusLabel.WarmingValue:
		return true
	case v == s.cfg.StatusLabel.Value && slices.Contains(s.cfg.Upgrade.KernelVersions, n.Status.NodeInfo.KernelVersion):
		return true
	}
	return s.keep && n.Labels[s.cfg.StatusLabel.Key] == ""
}

// kubelets pull the warmer pods' images: a pod turns Ready once they are on the disk. A pull
// fails for a while now and then.
func (s *sim) kubelets() {
	for _, name := range slices.Sorted(maps.Keys(s.pods)) {
		pod := s.pods[name]
		if state.PodReady(pod) || !nodeReady(s.nodes[name]) {
			continue
		}
		cs := &pod.Status.ContainerStatuses[0]
		switch r := s.rng.Float64(); {
		case !s.drain && r < 0.05:
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "pull failed"}}
		case s.drain || r < 0.5:
			cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
			s.setPodReady(pod, true)
			s.truth[name].warmRev = pod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
			s.logf("%s: warmer pod %s Ready", name, pod.UID)
		}
	}
}

func (s *sim) setPodReady(pod *corev1.Pod, ready bool) {
	pod.Status.Conditions = nil
	pod.Status.Phase = corev1.PodPending
	if ready {
		pod.Status.Phase = corev1.PodRunning
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
}

func (s *sim) nodeNames() []string { return slices.Sorted(maps.Keys(s.nodes)) }

// cycle runs one reconcile cycle as the event-driven mode does, from cached objects.
func (s *sim) cycle(step int) {
	s.clock.SetTime(s.now)
	c := Cached{MaintenanceServed: true, DaemonSet: s.ds.DeepCopy()}
	switch {
	case s.drain || !s.cfg.Maintenance.NodeMaintenance.Enabled:
		s.unknown = false
	case s.unknown:
		s.unknown = !s.chance(0.3)
	default:
		s.unknown = s.chance(0.03)
	}
	if s.unknown {
		c.MaintenanceUnknown = sources.ResourceName(s.cfg)
		s.stats["cycles with the NodeMaintenance source unknown"]++
	}
	for _, name := range s.nodeNames() {
		n := s.nodes[name]
		if n.Labels["pool"] == "notebooks" || n.Labels[s.cfg.StatusLabel.Key] != "" {
			cp := n.DeepCopy()
			s.eng.TrimNode(cp)
			c.Nodes = append(c.Nodes, cp)
		}
	}
	for _, uid := range slices.Sorted(maps.Keys(s.nms)) {
		nm := s.nms[uid]
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
			"metadata": map[string]any{"name": nm.name, "uid": nm.uid, "creationTimestamp": state.FormatTime(nm.created)},
			"spec":     map[string]any{"nodeName": nm.node},
		}}
		c.Maintenance = append(c.Maintenance, u)
	}
	for _, r := range s.revs {
		c.Revisions = append(c.Revisions, r.DeepCopy())
	}
	for _, name := range slices.Sorted(maps.Keys(s.pods)) {
		c.Pods = append(c.Pods, s.pods[name].DeepCopy())
	}
	for name, tr := range s.truth {
		tr.atSnapshot = s.activeIDs(name)
	}
	obs, err := s.eng.ObserveFrom(c)
	if err != nil {
		s.failf("observe: %v", err)
	}
	p := s.eng.Planner().Compute(obs.Snapshot)
	if s.drain {
		for _, a := range p.Actions {
			s.logf("plan: %s %s %s", a.Node, a.Type, a.Reason)
		}
	}
	s.lastNotes = map[string][]string{}
	for _, n := range p.Notes {
		s.lastNotes[n.Node] = append(s.lastNotes[n.Node], n.Message)
	}
	s.inWrite = true
	res, err := s.eng.Apply(context.Background(), obs, p)
	s.inWrite = false
	if s.violation != "" {
		s.failf("%s", s.violation)
	}
	if err != nil {
		s.stats["failed cycles"]++
		if s.drain {
			s.logf("cycle failed: %v", err)
		}
	}
	entered := false
	for _, w := range res.Written {
		s.stats[string(w.Action.Type)+" "+w.Action.Reason]++
		if w.Action.Type == plan.Enter {
			entered = true
		}
		if w.Action.Type == plan.Release && w.Action.Reason == state.ReasonTimeout && !w.Action.Warning() {
			s.failf("node %s released on a timeout without a Warning Event: %+v", w.Action.Node, w.Action.Events)
		}
	}
	if limit := plan.Budget(s.cfg.MaxConcurrent, s.poolSize()); entered && limit > 0 {
		if slots := s.slots(); slots > limit {
			s.failf("cycle %d entered nodes beyond maxConcurrent %d: %d nodes tainted or warming", step, limit, slots)
		}
	}
}

func (s *sim) poolSize() int {
	n := 0
	for _, node := range s.nodes {
		if node.Labels["pool"] == "notebooks" {
			n++
		}
	}
	return n
}

func (s *sim) slots() int {
	n := 0
	for _, node := range s.nodes {
		if node.Labels["pool"] == "notebooks" && s.eng.Planner().TakesASlot(node) {
			n++
		}
	}
	return n
}

var nodesResource = schema.GroupResource{Resource: "nodes"}

func (s *sim) getNode(a k8stesting.Action) (bool, runtime.Object, error) {
	name := a.(k8stesting.GetAction).GetName()
	n, ok := s.nodes[name]
	if !ok {
		return true, nil, apierrors.NewNotFound(nodesResource, name)
	}
	return true, n.DeepCopy(), nil
}

// patchNode applies the orchestrator's patch to the world as the API server would, after another
// writer's change now and then, and checks the invariants on what it changed. Now and then the
// write fails, or lands and loses its answer.
func (s *sim) patchNode(a k8stesting.Action) (bool, runtime.Object, error) {
	pa := a.(k8stesting.PatchAction)
	name := pa.GetName()
	n, ok := s.nodes[name]
	if !ok {
		return true, nil, apierrors.NewNotFound(nodesResource, name)
	}
	if !s.drain && s.chance(0.1) {
		s.race(name)
	}
	if !s.drain && s.chance(0.03) {
		s.logf("%s: patch refused (500)", name)
		return true, nil, apierrors.NewInternalError(errors.New("etcd leader changed"))
	}
	doc, err := json.Marshal(n)
	if err != nil {
		s.failf("encoding node %s: %v", name, err)
	}
	var out []byte
	switch pa.GetPatchType() {
	case types.MergePatchType:
		var guard struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(pa.GetPatch(), &guard); err != nil || guard.Metadata.ResourceVersion == "" {
			s.failf("merge patch of %s without a resourceVersion guard: %s", name, pa.GetPatch())
		}
		if guard.Metadata.ResourceVersion != n.ResourceVersion {
			return true, nil, apierrors.NewConflict(nodesResource, name, errors.New("the object has been modified"))
		}
		out, err = jsonpatch.MergePatch(doc, pa.GetPatch())
	case types.JSONPatchType:
		var ops jsonpatch.Patch
		ops, err = jsonpatch.DecodePatch(pa.GetPatch())
		if err == nil {
			out, err = ops.Apply(doc)
		}
		if err != nil {
			return true, nil, apierrors.NewGenericServerResponse(422, "patch", nodesResource, "", patchNotApplicable, 0, false)
		}
	default:
		s.failf("unexpected patch type %s", pa.GetPatchType())
	}
	if err != nil {
		s.failf("applying patch to %s: %v\n%s", name, err, pa.GetPatch())
	}
	after := &corev1.Node{}
	if err := json.Unmarshal(out, after); err != nil {
		s.failf("decoding patched node %s: %v", name, err)
	}
	s.check(n, after)
	s.touch(after)
	s.nodes[name] = after
	if !s.drain && s.chance(0.03) {
		s.logf("%s: patch applied, answer lost", name)
		return true, nil, errors.New("http2: client connection lost")
	}
	return true, after.DeepCopy(), nil
}

// race is another writer changing the node between the orchestrator's read and its write.
func (s *sim) race(name string) {
	n := s.nodes[name]
	switch r := s.rng.Float64(); {
	case r < 0.3:
		n.Annotations[heartbeatAn] = strconv.Itoa(s.rv)
		s.touch(n)
	case r < 0.4 && s.ourTaint(n):
		s.logf("%s: an operator removes the taint (racing a write)", name)
		s.removeOurTaint(n)
	case r < 0.5:
		s.logf("%s: another writer adds a taint (racing a write)", name)
		s.seq++
		n.Spec.Taints = append([]corev1.Taint{{Key: fmt.Sprintf("example.com/t%d", s.seq), Effect: corev1.TaintEffectPreferNoSchedule}}, n.Spec.Taints...)
		s.touch(n)
	default:
		// Not a reboot: one takes the node away for a while (its Ready condition turns Unknown,
		// it comes back with a new boot ID and restarted pods), where a write takes milliseconds.
		s.logf("%s: the pipeline moves on (racing a write)", name)
		s.pipeline(name, false)
	}
}

// check asserts the invariants on one patch of the orchestrator: before is the node as the API
// server held it, after as the patch left it.
func (s *sim) check(before, after *corev1.Node) {
	name := before.Name
	if owner, ok := before.Annotations[state.Owner]; ok && owner != s.cfg.Instance && state.PhaseOf(before) != "" {
		s.failf("node %s, managed by %s, written", name, owner)
	}
	if before.Labels["pool"] != "notebooks" && before.Labels[s.cfg.StatusLabel.Key] == "" && state.PhaseOf(before) == "" {
		s.failf("node %s written though neither in the pool nor managed", name)
	}
	// Only our taint, status label and annotations change.
	ours := func(t corev1.Taint) bool { return t.Key == s.cfg.Taint.Key && t.Effect == s.cfg.Taint.Effect }
	if a, b := slices.DeleteFunc(slices.Clone(before.Spec.Taints), ours), slices.DeleteFunc(slices.Clone(after.Spec.Taints), ours); !slices.Equal(a, b) {
		s.failf("node %s: other taints changed: %v -> %v", name, before.Spec.Taints, after.Spec.Taints)
	}
	foreign := func(m map[string]string, isOurs func(string) bool) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if !isOurs(k) {
				out[k] = v
			}
		}
		return out
	}
	ourLabel := func(k string) bool { return k == s.cfg.StatusLabel.Key }
	ourAnnotation := func(k string) bool { return strings.HasPrefix(k, state.Prefix) }
	if a, b := foreign(before.Labels, ourLabel), foreign(after.Labels, ourLabel); !maps.Equal(a, b) {
		s.failf("node %s: other labels changed: %v -> %v", name, a, b)
	}
	if a, b := foreign(before.Annotations, ourAnnotation), foreign(after.Annotations, ourAnnotation); !maps.Equal(a, b) {
		s.failf("node %s: other annotations changed: %v -> %v", name, a, b)
	}
	if before.Spec.Unschedulable != after.Spec.Unschedulable {
		s.failf("node %s: cordon changed", name)
	}

	tr := s.truth[name]
	entered := state.PhaseOf(before) == "" && state.PhaseOf(after) == state.PhaseTainted
	if entered && s.unknown {
		s.failf("node %s tainted while the NodeMaintenance source was unknown", name)
	}
	if entered {
		// As the cycle read them: a NodeMaintenance deleted meanwhile does not change the node.
		active := tr.atSnapshot
		if len(active) == 0 {
			s.failf("node %s tainted with no maintenance signal on it", name)
		}
		again := true
		for id := range active {
			again = again && tr.releasedWith[id]
		}
		if again {
			s.failf("node %s tainted again for maintenance %v it was already released for", name, slices.Sorted(maps.Keys(active)))
		}
		tr.upgradedSinceEntry = false
		s.logf("%s: tainted (maintenance %v)", name, slices.Sorted(maps.Keys(active)))
	}
	if state.PhaseOf(after) == state.PhaseWarming && state.PhaseOf(before) != state.PhaseWarming {
		tr.warmingSeq, tr.warmingBoot = s.seq, after.Status.NodeInfo.BootID
	}
	if !s.ourTaint(before) || s.ourTaint(after) {
		if !entered && state.PhaseOf(before) != state.PhaseOf(after) {
			s.logf("%s: phase %q -> %q (%s)", name, state.PhaseOf(before), state.PhaseOf(after), after.Annotations[state.ReleaseReason])
		}
		return
	}
	// The taint came off.
	reason := after.Annotations[state.ReleaseReason]
	s.logf("%s: released (%s)", name, reason)
	if reason != state.ReasonLeftPool {
		// Back in the pool, a node released for leaving it may be tainted again: its maintenance
		// may still have its upgrade to come.
		tr.releasedWith = maps.Clone(tr.atSnapshot)
		if s.unknown {
			// Released without reading the NodeMaintenance objects: the release keeps those
			// recorded on the node, and the node may be tainted again for another one, or for a
			// cordon it did not record (it cannot tell a cordon under a lingering object from
			// the next maintenance's, and leaves it out: fail-closed).
			for id := range tr.releasedWith {
				if _, isNM := s.nms[id]; isNM && !recorded(before, id) {
					delete(tr.releasedWith, id)
				}
				if id == tr.cordon && !recorded(after, plan.SourceCordoned) {
					delete(tr.releasedWith, id)
				}
			}
		}
	}
	if s.upgradeToCome(before, reason) {
		// A maintenance that began while the node was warming is not the one it was released
		// for: the node is tainted again for it, even if its upgrade is done (the orchestrator
		// cannot tell).
		for id := range s.laterMaintenance(before, false) {
			delete(tr.releasedWith, id)
		}
	}
	if s.upgradeToCome(before, reason) {
		for id, src := range s.laterMaintenance(before, true) {
			if recorded(before, src) || !recorded(after, src) {
				continue
			}
			s.failf("node %s released (%s) with maintenance %s, which began after its upgrade was seen and has its own upgrade to come, recorded as done (%s)",
				name, reason, id, after.Annotations[state.MaintenanceID])
		}
	}
	switch reason {
	case state.ReasonWarm:
		if tr.warmRev != s.hash {
			s.failf("node %s released warm, but the images of revision %s are not on its disk (it holds %q)", name, s.hash, tr.warmRev)
		}
	case state.ReasonCancelled:
		if tr.upgradedSinceEntry {
			s.failf("node %s released as cancelled, but it was upgraded", name)
		}
		if len(tr.atSnapshot) > 0 { // (a NodeMaintenance created since the cycle read them is not seen)
			s.failf("node %s released as cancelled while still in maintenance %v", name, tr.atSnapshot)
		}
	case state.ReasonTimeout:
		key, limit := state.TaintedAt, s.cfg.MaxWaitForUpgrade.Duration
		if state.PhaseOf(before) == state.PhaseWarming {
			key, limit = state.UpgradedAt, s.cfg.MaxWaitForWarm.Duration
			if s.cfg.OnWarmTimeout == config.OnWarmTimeoutKeep {
				s.failf("node %s released on the warm timeout with onWarmTimeout: keep", name)
			}
		}
		if since, ok := state.Time(before, key); ok && s.now.Sub(since) < limit {
			s.failf("node %s released on a timeout after %s of %s", name, s.now.Sub(since), limit)
		}
	case state.ReasonLeftPool:
		if before.Labels["pool"] == "notebooks" {
			s.failf("node %s released as left-pool while in the pool", name)
		}
	default:
		s.failf("node %s: its taint removed with release reason %q", name, reason)
	}
}

func (s *sim) podString(name string) string {
	pod := s.pods[name]
	if pod == nil {
		return "none"
	}
	return fmt.Sprintf("%s %s ready=%v restarts=%d (current %s)", pod.UID, pod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey], state.PodReady(pod), state.PodRestarts(pod), s.hash)
}

// laterMaintenance returns the signals of the node's maintenance that arrived after the node last
// went warming (with pending, only if that maintenance still has its upgrade to come): identity ->
// what maintenance-id records for it. A cordon under a NodeMaintenance the node records is part
// of that one. Without pending, a NodeMaintenance the node does not record that was created in
// the second its upgrade was seen counts too, when the cycle that saw it could not read the
// objects (upgraded-unread): it did not record it, and the release cannot tell it from one
// created just after (the node waits again).
func (s *sim) laterMaintenance(before *corev1.Node, pending bool) map[string]string {
	name := before.Name
	tr := s.truth[name]
	out := map[string]string{}
	if pending && (tr.op == nil || tr.op.upgraded || tr.op.abandoned) {
		return out
	}
	upgradedAt, _ := state.Time(before, state.UpgradedAt)
	underRecorded := false
	for _, nm := range s.nms {
		if nm.node != name {
			continue
		}
		if recorded(before, nm.uid) {
			underRecorded = true
		}
		_, unread := before.Annotations[state.UpgradedUnread]
		sameSecond := !pending && unread && !recorded(before, nm.uid) && nm.created.Unix() >= upgradedAt.Unix()
		if (nm.op == tr.op || !pending) && (nm.seq > tr.warmingSeq || sameSecond) {
			out[nm.uid] = nm.uid
		}
	}
	if tr.label != "" && tr.labelSeq > tr.warmingSeq {
		out[tr.label] = plan.SourceNodeLabel
	}
	if tr.cordon != "" && tr.cordonSeq > tr.warmingSeq && !underRecorded {
		out[tr.cordon] = plan.SourceCordoned
	}
	return out
}

func recorded(n *corev1.Node, id string) bool {
	return slices.Contains(strings.Split(n.Annotations[state.MaintenanceID], ","), id)
}

// upgradeToCome reports whether the world holds what the orchestrator needs to tell that a
// maintenance that began while the node was warming has its upgrade to come: the node has not
// rebooted since, and does not run a target kernel of upgrade.kernelVersions (which counts as
// upgraded).
func (s *sim) upgradeToCome(before *corev1.Node, reason string) bool {
	tr := s.truth[before.Name]
	return state.PhaseOf(before) == state.PhaseWarming && (reason == state.ReasonWarm || reason == state.ReasonTimeout) &&
		before.Status.NodeInfo.BootID == tr.warmingBoot &&
		!slices.Contains(s.cfg.Upgrade.KernelVersions, before.Status.NodeInfo.KernelVersion)
}

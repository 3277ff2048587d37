// Package engine is the Kubernetes I/O around the pure planner: it observes the cluster into a
// plan.Snapshot, asks the planner for actions, and applies them as conflict-guarded patches with
// Events. The one-shot CronJob mode and the event-driven mode share it.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/ratelimit"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// maxConflictRetries bounds re-read/re-plan/retry rounds for one node within one cycle.
const maxConflictRetries = 5

// DefaultWorkers is how many nodes are patched at once by default, at each write priority
// (Options.Workers). Writing 16 instead of 8 at once took about a quarter off the
// writes of a 5,000-node pool's first cycle on the benchmark machine (docs/benchmarks.md); 32
// and 64 were no faster.
const DefaultWorkers = 16

// EventDrivenWorkers is Options.Workers in the event-driven mode. Its entries and adoptions come
// in bursts when many nodes join at once, while the control plane is busiest with the new
// nodes; without a client-side rate limit, 16 of them in flight rather than 8 delayed the
// releases written alongside (the benchmark's join of 1,000 nodes: the releases of warmer pods
// Ready in its first 5 s took a median of 460-510 ms in two of three runs with 16, 100-180 ms in
// three runs with 8).
const EventDrivenWorkers = 8

// Options configure an Engine.
type Options struct {
	Config  *config.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DryRun computes and reports the plan but writes nothing.
	DryRun bool
	// Reporter names this process in Events (e.g. the pod name).
	Reporter string
	// Workers bounds how many nodes are patched at once, across concurrent Apply calls
	// (default DefaultWorkers), at each write priority: releases, the other writes of nodes on
	// their way to a release, entries and adoptions (see priority). A write never waits for a
	// slot held by a write of another priority. A client-side rate limit, if configured,
	// applies on top, and serves the priorities in the same order.
	Workers int
	// NodePageSize is how many nodes each request of a paginated node list returns (default 250).
	NodePageSize int64
	// PagedNodeLists reads node lists in pages from the start, rather than streamed where the API
	// server streams lists (see streamNodes).
	PagedNodeLists bool
	// Metrics records transitions and latencies; nil records nothing.
	Metrics *metrics.Metrics
	// EventClient writes Events; default Client. A client of its own (own rate limiter) keeps
	// Events from delaying node writes.
	EventClient kubernetes.Interface
}

// Engine runs reconcile cycles.
type Engine struct {
	cfg      *config.Config
	client   kubernetes.Interface
	planner  *plan.Planner
	sources  *sources.Collector
	clock    clock.PassiveClock
	log      *slog.Logger
	dryRun   bool
	reporter string
	metrics  *metrics.Metrics
	// nodePageSize is the limit of each request of a paginated node list.
	nodePageSize int64
	// pagedNodeLists is set once node lists are read in pages: from the start
	// (Options.PagedNodeLists) or since the API server refused to stream one.
	pagedNodeLists atomic.Bool
	// readLabels are the node label keys the configuration reads (TrimNode keeps only these).
	readLabels map[string]bool
	// gates bound the nodes written at once: each priority has its own (see priority).
	gates  [priorities]gate
	events kubernetes.Interface
	// pendingEvents tracks Events being written in the background; RunOnce and Cleanup wait for them.
	pendingEvents sync.WaitGroup
	eventSlots    chan struct{}
	// uninstall is the uninstall mark as re-read by long write phases (uninstallGuard).
	uninstall uninstallMark
}

// New returns an Engine for validated options.
func New(o Options) (*Engine, error) {
	if o.Config == nil || o.Client == nil {
		return nil, errors.New("engine: config and client are required")
	}
	if o.Config.Maintenance.NodeMaintenance.Enabled && o.Dynamic == nil {
		return nil, errors.New("engine: the nodeMaintenance source needs a dynamic client")
	}
	p, err := plan.New(o.Config)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: o.Config, client: o.Client, planner: p,
		sources: sources.NewCollector(o.Config, o.Dynamic),
		clock:   o.Clock, log: o.Logger, dryRun: o.DryRun, reporter: o.Reporter,
		metrics: o.Metrics, readLabels: o.Config.ReadLabelKeys(),
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	e.nodePageSize = o.NodePageSize
	if e.nodePageSize <= 0 {
		e.nodePageSize = nodePageSize
	}
	e.pagedNodeLists.Store(o.PagedNodeLists)
	for i := range e.gates {
		e.gates[i] = newGate(o.Workers)
	}
	e.events = o.EventClient
	if e.events == nil {
		e.events = o.Client
	}
	e.eventSlots = make(chan struct{}, 8)
	if e.clock == nil {
		e.clock = clock.RealClock{}
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.reporter == "" {
		e.reporter = "prewarm-orchestrator"
	}
	return e, nil
}

// Planner returns the engine's planner.
func (e *Engine) Planner() *plan.Planner { return e.planner }

// DryRun reports whether the engine only reports its plans (Options.DryRun).
func (e *Engine) DryRun() bool { return e.dryRun }

// Result summarises one cycle.
type Result struct {
	// Plan is what the planner decided (in dry-run mode, what would have been done).
	Plan plan.Plan
	// Applied counts the actions written, by type.
	Applied map[plan.ActionType]int
	// Warnings are objects the sources skipped.
	Warnings []sources.Warning
	// Written are the nodes this cycle patched, as the API server returned them.
	Written []Written
	// Took is how long each step of a RunOnce cycle took.
	Took Timing
}

// Timing is the duration of each step of a cycle.
type Timing struct {
	// Observe is listing and planning; Write, patching the nodes; Events, waiting for the Events
	// still being written when the last patch returned.
	Observe, Write, Events time.Duration
}

// Written is one node patch of a cycle.
type Written struct {
	// Action is the action applied (after any re-plan on conflict).
	Action plan.Action
	// Before is the resourceVersion that guarded the patch: the node's version just before it.
	Before string
	// Node is the node as the patch left it.
	Node *corev1.Node
	// Unchanged marks a node re-read after a conflict that showed nothing left to write: no
	// patch was made, but Node is newer than the caller's copy (the event-driven mode plans
	// from it rather than write again from a cache that has not caught up).
	Unchanged bool
}

// RunOnce observes, plans and applies one cycle. It returns an error when the cycle could not
// complete (API unreachable, RBAC denied, a patch that kept failing); nodes still waiting for
// their upgrade or warmer pod are normal. A cycle whose maintenance objects could not be read is
// planned without them (no entry, nobody leaves maintenance), applied, and then fails: warm nodes
// do not wait for another API to recover.
func (e *Engine) RunOnce(ctx context.Context) (Result, error) {
	start := time.Now()
	obs, err := e.observe(ctx, observeOptions{confirm: true})
	if err != nil {
		return Result{}, err
	}
	LogWarnings(ctx, e.log, obs.Warnings)
	p := e.planner.Compute(obs.Snapshot)
	observed := time.Now()
	res, err := e.apply(ctx, obs, p, e.planner.Compute, nil, nil)
	written := time.Now()
	e.waitEvents(ctx)
	res.Took = Timing{Observe: observed.Sub(start), Write: written.Sub(observed), Events: time.Since(written)}
	if !e.dryRun {
		e.metrics.SetNodes(e.Count(After(obs.Snapshot.Nodes, res.Written)))
	}
	if obs.MaintenanceErr != nil {
		err = errors.Join(err, fmt.Errorf("%w: %w", ErrMaintenanceNotRead, obs.MaintenanceErr))
	}
	return res, err
}

// ErrMaintenanceNotRead marks the error of a RunOnce cycle that was planned and applied without
// the nodeMaintenance objects, which could not be read.
var ErrMaintenanceNotRead = errors.New("the maintenance objects could not be read, so the cycle planned without them")

// Count returns how many of nodes this installation manages, by phase and by recorded problem,
// and how many are in the pool.
func (e *Engine) Count(nodes []*corev1.Node) metrics.NodeCounts {
	c := metrics.NodeCounts{ByPhase: map[string]int{}, ByProblem: map[string]int{}}
	for _, n := range nodes {
		if e.planner.InPool(n) {
			c.Pool++
		}
		if e.planner.Owns(n) {
			phase := state.PhaseOf(n)
			c.ByPhase[phase]++
			switch r := plan.RecordedProblem(n); {
			case r != "":
				c.ByProblem[r]++
			case phase != state.PhaseTainted && phase != state.PhaseWarming:
				// A phase set by hand that the planner does not know: nothing releases the node
				// until someone fixes it, so it is a problem the alerts see.
				c.ByProblem[plan.ProblemOther]++
			}
		}
	}
	return c
}

// After returns nodes with those written replaced by the patched objects.
func After(nodes []*corev1.Node, written []Written) []*corev1.Node {
	if len(written) == 0 {
		return nodes
	}
	byName := make(map[string]*corev1.Node, len(written))
	for _, w := range written {
		if w.Node != nil {
			byName[w.Node.Name] = w.Node
		}
	}
	out := make([]*corev1.Node, len(nodes))
	for i, n := range nodes {
		if w, ok := byName[n.Name]; ok {
			n = w
		}
		out[i] = n
	}
	return out
}

// Cleanup releases every node this installation manages (reason cleanup), without uninstalling:
// the orchestrator goes on and taints nodes again at their next maintenance.
func (e *Engine) Cleanup(ctx context.Context) (Result, error) {
	res, _, err := e.cleanup(ctx, false, nil)
	return res, err
}

// cleanup releases every node this installation manages; uninstall says whether the installation
// is being uninstalled (Uninstall's sweeps), for the actions' messages.
func (e *Engine) cleanup(ctx context.Context, uninstall bool, noted map[plan.Note]bool) (res Result, managed int, err error) {
	obs, err := e.observe(ctx, observeOptions{everyNode: true})
	if err != nil {
		return Result{}, 0, err
	}
	replan := func(s plan.Snapshot) plan.Plan { return e.planner.Cleanup(s, uninstall) }
	p := replan(obs.Snapshot)
	phased := map[string]bool{}
	for _, n := range obs.Snapshot.Nodes {
		phased[n.Name] = state.PhaseOf(n) != ""
	}
	for _, a := range p.Actions {
		if phased[a.Node] {
			managed++
		}
	}
	if noted != nil {
		// A sweep after the first says only what the earlier ones did not.
		p.Notes = slices.DeleteFunc(p.Notes, func(n plan.Note) bool { return noted[n] })
		for _, n := range p.Notes {
			noted[n] = true
		}
	}
	res, err = e.apply(ctx, obs, p, replan, nil, nil)
	e.waitEvents(ctx)
	return res, managed, err
}

// Uninstall is Cleanup for an uninstall (the chart's pre-delete hook). It first marks the warmer
// DaemonSet (state.Uninstalling), after which no orchestrator of this installation taints or
// adopts a node, then releases every managed node, and sweeps again until a sweep finds nothing
// and settle has passed since the mark: a cycle that read the pool before the mark may still be
// writing its last entries. The release counts of all sweeps add up in the result. If a sweep
// fails (or ctx ends), the mark is removed again: a release that Helm keeps after a failed
// uninstall works as before, rather than tainting nothing until someone notices.
func (e *Engine) Uninstall(ctx context.Context, settle time.Duration) (res Result, err error) {
	mark, set, err := e.markUninstalling(ctx)
	if err != nil {
		if outcomeUnknown(err) {
			// No answer (SIGTERM, the hook's deadline, a timeout): the mark may have landed.
			e.unmarkUninstalling(ctx, mark, err)
		}
		return Result{}, err
	}
	if set {
		defer func() {
			if err != nil {
				e.unmarkUninstalling(ctx, mark, err)
			}
		}()
	}
	return e.sweep(ctx, settle)
}

// sweep releases every managed node, again and again until none is left and settle has passed
// since the mark.
func (e *Engine) sweep(ctx context.Context, settle time.Duration) (Result, error) {
	marked := e.clock.Now()
	total := Result{Applied: map[plan.ActionType]int{}}
	noted := map[plan.Note]bool{}
	for sweep := 1; ; sweep++ {
		res, managed, err := e.cleanup(ctx, true, noted)
		total.Plan.Actions = append(total.Plan.Actions, res.Plan.Actions...)
		total.Plan.Notes = append(total.Plan.Notes, res.Plan.Notes...)
		total.Written = append(total.Written, res.Written...)
		for t, n := range res.Applied {
			total.Applied[t] += n
		}
		if err != nil {
			return total, err
		}
		if sweep > 1 && len(res.Plan.Actions) > 0 {
			e.log.Warn("released nodes tainted after the uninstall began", "nodes", len(res.Plan.Actions), "sweep", sweep)
		}
		// Done once a sweep after the settle released no node of ours: the releases of nodes that
		// joined with the taint (never adopted) do not count, or a pool adding such nodes every
		// few seconds would keep the sweeps going until the hook's deadline.
		wait := settle - e.clock.Since(marked)
		if e.dryRun || (managed == 0 && wait <= 0) {
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(min(max(wait, 0), 2*time.Second) + 100*time.Millisecond):
		}
	}
}

// markUninstalling sets state.Uninstalling on the warmer DaemonSet and reports whether it did,
// with the mark's value: the time, to the nanosecond, which tells this run's mark from another's.
// A missing DaemonSet is logged: nothing can taint a node then, and the sweeps still release them.
func (e *Engine) markUninstalling(ctx context.Context) (mark string, set bool, err error) {
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	if e.dryRun {
		e.log.Info("dry run: would mark the warmer DaemonSet as uninstalling", "daemonSet", ns+"/"+name)
		return "", false, nil
	}
	mark = e.clock.Now().UTC().Format(time.RFC3339Nano)
	err = e.annotateWarmer(ctx, mark)
	switch {
	case apierrors.IsNotFound(err):
		e.log.Warn("warmer DaemonSet not found; releasing the nodes without marking it", "daemonSet", ns+"/"+name)
		return mark, false, nil
	case err != nil:
		return mark, false, fmt.Errorf("marking the warmer DaemonSet %s/%s as uninstalling: %w", ns, name, err)
	}
	e.log.Info("marked the warmer DaemonSet: no node is tainted or adopted from now on", "daemonSet", ns+"/"+name)
	return mark, true, nil
}

// unmarkUninstalling removes this run's mark after an uninstall failed (cause), so that a release
// Helm keeps goes on working as before instead of staying idle; a retried hook marks it again. It
// runs even when ctx has ended (the hook's deadline, SIGTERM), with a short timeout of its own.
// Only a mark with this run's value is removed (a JSON patch that tests it): a hook pod stopped
// while a retried uninstall's hook already runs (Helm replaces the Job) must not lift that
// one's mark.
func (e *Engine) unmarkUninstalling(ctx context.Context, mark string, cause error) {
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	path := annotationPath(state.Uninstalling)
	patch, err := json.Marshal([]map[string]any{{"op": "test", "path": path, "value": mark}, {"op": "remove", "path": path}})
	if err == nil {
		_, err = e.client.AppsV1().DaemonSets(ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	}
	if err == nil {
		e.log.Warn("the uninstall failed: removed its mark, the orchestrator works as before", "daemonSet", ns+"/"+name, "cause", cause)
		return
	}
	if apierrors.IsNotFound(err) {
		return
	}
	// Refused: the test failed (the mark is another's, or never landed), or the patch did. The
	// DaemonSet tells which, whatever the error looks like.
	ds, gerr := e.client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(gerr) {
		return
	}
	if gerr == nil {
		if cur, marked := ds.Annotations[state.Uninstalling]; !marked || cur != mark {
			e.log.Warn("the uninstall failed; its mark is not on the warmer DaemonSet (it never landed, or another uninstall's replaced it): left as it is",
				"daemonSet", ns+"/"+name, "cause", cause)
			return
		}
	}
	e.log.Error("the uninstall failed and its mark could not be removed: the orchestrator taints and adopts no node until it is",
		"daemonSet", ns+"/"+name, "cause", cause, "error", err,
		"fix", fmt.Sprintf("kubectl -n %s annotate daemonset %s %s-", ns, name, state.Uninstalling))
}

// annotateWarmer sets the uninstall mark on the warmer DaemonSet to value.
func (e *Engine) annotateWarmer(ctx context.Context, value string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		state.Uninstalling: value,
	}}})
	if err != nil {
		return err
	}
	_, err = e.client.AppsV1().DaemonSets(e.cfg.Warmer.Namespace).Patch(ctx, e.cfg.Warmer.DaemonSetName, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// Apply writes the plan's actions, computed by this engine's planner from obs, as run --once
// does; the event-driven controller calls it with plans computed from its informer caches.
// It is safe to call concurrently for plans about different nodes.
func (e *Engine) Apply(ctx context.Context, obs Observation, p plan.Plan) (Result, error) {
	return e.apply(ctx, obs, p, e.planner.Compute, nil, nil)
}

// ApplyNotify is Apply for a caller that keeps watching the cluster while the plan is applied.
// latest, if set, returns the most recent version of a node the caller knows (nil: none): an
// action that waited for a write slot is re-planned from it first when it is newer than the
// snapshot's, rather than sent with a version bound to conflict. done is called as each
// action's node is finished with (w is nil when nothing was written), so the caller can act on
// a node before the whole plan is applied; it may be called concurrently.
func (e *Engine) ApplyNotify(ctx context.Context, obs Observation, p plan.Plan, latest func(name string) *corev1.Node, done func(a plan.Action, w *Written, err error)) (Result, error) {
	return e.apply(ctx, obs, p, e.planner.Compute, latest, done)
}

// apply writes the plan's actions, up to Options.Workers nodes at a time (one action per node,
// so their order does not matter). On a conflict it re-reads the node, re-plans with the fresh
// object and retries; other nodes are applied regardless of one node's failure.
func (e *Engine) apply(ctx context.Context, obs Observation, p plan.Plan, replan func(plan.Snapshot) plan.Plan, latest func(string) *corev1.Node, done func(plan.Action, *Written, error)) (Result, error) {
	res := Result{Plan: p, Applied: map[plan.ActionType]int{}, Warnings: obs.Warnings}
	LogNotes(ctx, e.log, p.Notes)
	if e.dryRun {
		for _, a := range p.Actions {
			e.logAction(ctx, "dry run: would ", a)
		}
		return res, nil
	}
	nodes := make(map[string]*corev1.Node, len(obs.Snapshot.Nodes))
	for _, n := range obs.Snapshot.Nodes {
		nodes[n.Name] = n
	}
	// Releases first (a user is waiting for those nodes), entries and adoptions last.
	actions := slices.Clone(p.Actions)
	slices.SortStableFunc(actions, func(a, b plan.Action) int { return priority(b) - priority(a) })
	var (
		mu    sync.Mutex
		errs  []error
		wg    sync.WaitGroup
		guard = uninstallGuard{e: e, start: obs.WarmerReadAt}
		// kept counts the releases that did not free their node's slot in the budget.
		kept int
	)
	// launch starts the writes of list, each once a write slot is free. When the context ends
	// first, the actions not started are finished with its error, as are those of later.
	launch := func(list, later []plan.Action) error {
		for i, a := range list {
			g := e.gates[priority(a)]
			if err := g.acquire(ctx); err != nil {
				if done != nil {
					for _, left := range append(slices.Clone(list[i:]), later...) {
						done(left, nil, err)
					}
				}
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return err
			}
			if guard.holds(ctx, a.Type) {
				g.release()
				if done != nil {
					done(a, nil, nil)
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				actx := ctx
				switch a.Type {
				case plan.Release:
					actx = ratelimit.Urgent(ctx)
				case plan.Upgraded, plan.Record:
					actx = ratelimit.Expedited(ctx)
				case plan.Enter, plan.Adopt:
					// Checked again right before each request is sent: it may wait for the
					// client's rate limiter, or be sent again after a conflict, for longer than
					// the uninstall's sweeps last.
					actx = ratelimit.WithCheck(ctx, func() error {
						if guard.holds(ctx, a.Type) {
							return errHeld
						}
						return nil
					})
				}
				w, err := e.applyNode(actx, obs.Snapshot, nodes[a.Node], a, replan, latest)
				g.release()
				if errors.Is(err, errHeld) {
					if done != nil {
						done(a, nil, nil)
					}
					return
				}
				if done != nil {
					done(a, w, err)
				}
				mu.Lock()
				defer mu.Unlock()
				if a.Type == plan.Release && !e.freed(a, w, err, latest) {
					kept++
				}
				if err != nil {
					errs = append(errs, err)
					e.log.Error("applying action failed", "node", a.Node, "action", a.Type, "error", err)
					return
				}
				if w != nil && !w.Unchanged {
					res.Applied[w.Action.Type]++
					res.Written = append(res.Written, *w)
				}
			}()
		}
		return nil
	}
	releases := 0
	for releases < len(actions) && actions[releases].Type == plan.Release {
		releases++
	}
	rest := actions[releases:]
	if releases > 0 && p.EntriesOnReleases > 0 {
		// The planner let this plan's releases free budget for some of its entries: the entries
		// wait for the releases, and for each release that failed (or turned into another write
		// on a re-read) one of those is left to the next plan, so that maxConcurrent holds.
		if err := launch(actions[:releases], rest); err != nil {
			wg.Wait()
			return res, joinWriteErrors(errs)
		}
		wg.Wait()
		rest = e.deferEntries(ctx, rest, min(kept, p.EntriesOnReleases), done)
	} else {
		rest = actions
	}
	_ = launch(rest, nil)
	wg.Wait()
	return res, joinWriteErrors(errs)
}

// maxListedErrors is how many failed writes a cycle's error lists; the log has every one.
const maxListedErrors = 10

// joinWriteErrors is errors.Join, but lists at most maxListedErrors of them and counts the
// rest: a cycle whose every write fails (RBAC without patch on nodes, at 5,000 nodes) exits with
// a message a person can read, not thousands of lines. errors.Is and errors.As see them all.
func joinWriteErrors(errs []error) error {
	if len(errs) <= maxListedErrors {
		return errors.Join(errs...)
	}
	return writeErrors(errs)
}

type writeErrors []error

func (e writeErrors) Error() string {
	var b strings.Builder
	for _, err := range e[:maxListedErrors] {
		b.WriteString(err.Error())
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "and %d more (each is logged)", len(e)-maxListedErrors)
	return b.String()
}

func (e writeErrors) Unwrap() []error { return e }

// freed reports whether a release's outcome took its node out of maxConcurrent's count: the
// release written, or nothing written and the node, as the latest version known shows (the
// re-read after a conflict; in the event-driven mode, the caches and the writes since), gone or
// no longer counted (not tainted or warming for this installation). A release that failed,
// turned into another write, or found the node still counted (back in maintenance before the
// write: nothing left to release) keeps its slot; so does one whose node was deleted while the
// caches still hold it, until the next plan (its entry is left to it, a second later).
func (e *Engine) freed(a plan.Action, w *Written, err error, latest func(string) *corev1.Node) bool {
	switch {
	case err != nil:
		return false
	case w == nil:
		if latest != nil {
			if n := latest(a.Node); n != nil {
				return !e.planner.TakesASlot(n)
			}
		}
		return true
	case w.Unchanged:
		return !e.planner.TakesASlot(w.Node)
	}
	return w.Action.Type == plan.Release
}

// ErrDeferred finishes an entry left to the next plan (see apply): the caller re-plans it later,
// as after a failed write, not at once.
var ErrDeferred = errors.New("entry left to the next plan: a release it counted on for maxConcurrent did not happen")

// deferEntries drops the last n entries of actions (entries are planned in name order, so these
// are the last ones the budget admitted), finishing each with done and ErrDeferred, and returns
// the others.
func (e *Engine) deferEntries(ctx context.Context, actions []plan.Action, n int, done func(plan.Action, *Written, error)) []plan.Action {
	if n == 0 {
		return actions
	}
	out := slices.Clone(actions)
	for i := len(out) - 1; i >= 0 && n > 0; i-- {
		a := out[i]
		if a.Type != plan.Enter {
			continue
		}
		out = slices.Delete(out, i, i+1)
		n--
		e.log.InfoContext(ctx, "entry left to the next cycle: a release it counted on for maxConcurrent did not happen", "node", a.Node)
		if done != nil {
			done(a, nil, ErrDeferred)
		}
	}
	return out
}

// uninstallCheckInterval is how often a plan that is still entering or adopting nodes re-reads
// the warmer DaemonSet for the uninstall mark: well inside `cleanup --uninstall`'s sweeps, which
// go on for --settle (10 s) after the mark and every 2 s until one finds nothing.
const uninstallCheckInterval = 2 * time.Second

// uninstallGuard stops a plan's entries and adoptions once `cleanup --uninstall` has marked the
// warmer DaemonSet (state.Uninstalling), and its entries once a re-read finds the DaemonSet gone
// (a mark once seen stays even then). The plan was computed from a snapshot without the mark,
// but writing it can take long (hundreds of entries, more so when client.qps paces them): an
// entry that landed after the hook's last sweep would leave a node tainted with no orchestrator
// left to release it. A plan whose DaemonSet was read less than uninstallCheckInterval ago (an
// observation of thousands of nodes can take longer than that) trusts its snapshot, so a
// short cycle costs no request; later writes share the engine's
// uninstallMark. Used by apply's loop only.
type uninstallGuard struct {
	e *Engine
	// start is when the snapshot's DaemonSet was read: the mark it showed is that old, so the
	// first re-read is due uninstallCheckInterval after it, however long the observation took.
	// Zero when unknown: the first re-read is due at once.
	start time.Time
}

// errHeld is the error of a request the uninstall guard stopped before it was sent: its entry or
// adoption is dropped, as the guard's check at the write slot drops one.
var errHeld = errors.New("dropped: the installation is being uninstalled, or its warmer DaemonSet is gone")

// uninstallMark is the mark as last re-read while writing, shared by every apply of the engine:
// the event-driven mode may have hundreds of small plans waiting on the client's rate limiter at
// once, and each reading the DaemonSet for itself would cost one GET per plan (hundreds in a
// thousand-node join, each also taking a token from the writes) instead of one per interval.
type uninstallMark struct {
	mu   sync.Mutex
	read time.Time // zero: never read
	set  bool
	// missing: the last read found no DaemonSet, or one being deleted.
	missing bool
	// inSnapshot: an observation's DaemonSet carried the mark since the last read that found the
	// DaemonSet without it (see seen). Atomic: observations do not wait for a read in flight.
	inSnapshot atomic.Bool
}

// seen records a mark on the DaemonSet of an observation (the event-driven mode's cache shows it
// before any re-read would, and plans nothing while it does): once Helm deletes the marked
// DaemonSet after the uninstall's hook, the plans made without it would adopt nodes that joined
// tainted, and a re-read would find no DaemonSet, not the mark. Only a re-read that finds the
// DaemonSet unmarked clears it (a failed uninstall removed the mark).
func (m *uninstallMark) seen(ds *appsv1.DaemonSet) {
	if ds == nil {
		return
	}
	if _, marked := ds.Annotations[state.Uninstalling]; marked {
		m.inSnapshot.Store(true)
	}
}

// holds reports whether an entry or adoption still being written must be dropped, as the
// planner would not plan it now: while the installation is being uninstalled, both; while the
// warmer DaemonSet is missing (deleted meanwhile, or by the uninstall after its mark), entries,
// which no warmer could make warm. The DaemonSet is read at most once per uninstallCheckInterval
// across all plans. A read that fails is logged and keeps the last answer (nothing held when
// there is none): it must not stop a cycle, nor undo a mark already seen; a DaemonSet gone does
// not undo it either.
func (g *uninstallGuard) holds(ctx context.Context, t plan.ActionType) bool {
	if t != plan.Enter && t != plan.Adopt {
		return false
	}
	set, missing := g.marked(ctx)
	return set || (missing && t == plan.Enter)
}

// marked returns the uninstall mark and whether the DaemonSet is missing, as last read.
func (g *uninstallGuard) marked(ctx context.Context) (set, missing bool) {
	e := g.e
	if e.clock.Since(g.start) < uninstallCheckInterval {
		return false, false
	}
	m := &e.uninstall
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.read.IsZero() && e.clock.Since(m.read) < uninstallCheckInterval {
		return m.set || m.inSnapshot.Load(), m.missing
	}
	m.read = e.clock.Now()
	was, wasMissing := m.set, m.missing
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	// Urgent: every write waiting on the mark (holding its token) waits for this read, which must
	// not queue behind the writes still waiting for the client's rate limiter.
	ds, err := e.client.AppsV1().DaemonSets(ns).Get(ratelimit.Urgent(ratelimit.WithCheck(ctx, nil)), name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		m.missing = true
	case err != nil:
		// A mark once seen stays until a read shows it gone: entries resumed on one failed read
		// could land after the uninstall's last sweep.
		e.log.Warn("re-reading the warmer DaemonSet for an uninstall mark failed; going on with the last answer", "daemonSet", ns+"/"+name, "marked", was, "error", err)
	default:
		_, m.set = ds.Annotations[state.Uninstalling]
		// Being deleted counts as gone: it creates no more warmer pods (plan.Compute agrees).
		m.missing = ds.DeletionTimestamp != nil
		if !m.set {
			m.inSnapshot.Store(false)
		}
	}
	if m.inSnapshot.Load() {
		m.set = true // seen in an observation, and not contradicted by this read
	}
	if m.set && !was {
		e.log.Info("the installation is being uninstalled: entries and adoptions still being written are dropped", "daemonSet", ns+"/"+name)
	}
	if m.missing && !wasMissing && !m.set {
		e.log.Warn("the warmer DaemonSet is gone or being deleted: entries still being written are dropped", "daemonSet", ns+"/"+name)
	}
	return m.set, m.missing
}

// Write priorities, in apply's order (highest first) and write slots (one gate each), and as
// the client's rate limiter serves them (ratelimit.Urgent, ratelimit.Expedited).
const (
	// priorityBulk: entries and adoptions, which come by the hundred when a maintenance wave
	// begins or nodes join at once.
	priorityBulk = iota
	// priorityOnTheWay: the other writes of a node on its way to its release (the upgrade seen,
	// bookkeeping such as a warmer pod's problem). The controller plans nothing else for a node
	// while one of its writes is in flight, so such a write waiting behind a burst of adoptions
	// from other plans would hold the node's release back for as long.
	priorityOnTheWay
	// priorityRelease: a user waits for the node.
	priorityRelease
	priorities
)

// priority returns the action's write priority.
func priority(a plan.Action) int {
	switch a.Type {
	case plan.Release:
		return priorityRelease
	case plan.Upgraded, plan.Record:
		return priorityOnTheWay
	}
	return priorityBulk
}

// applyNode patches one node, re-planning it on conflict (and first, when latest knows a newer
// version than the snapshot's). It returns what was written; nil when the version latest knows
// showed nothing left to do, or the node is gone; and the node re-read, marked Unchanged, when
// a re-read after a conflict showed nothing left to do.
func (e *Engine) applyNode(ctx context.Context, snap plan.Snapshot, node *corev1.Node, a plan.Action, replan func(plan.Snapshot) plan.Plan, latest func(string) *corev1.Node) (*Written, error) {
	if latest != nil && node != nil {
		// The action may have waited for a slot while the node changed: start from the latest
		// version known, not from one bound to conflict.
		if fresh := latest(a.Node); fresh != nil && Newer(fresh, node) {
			next, ok := e.replanNode(snap, fresh, a.Type, replan)
			if !ok {
				return nil, nil
			}
			node, a = fresh, next
		}
	}
	// The action's check (ratelimit.WithCheck) stops its writes only: the read that verifies a
	// write whose answer was lost, and the re-read after a conflict, go out whatever it says.
	reads := ratelimit.WithCheck(ctx, nil)
	for attempt := 0; ; attempt++ {
		if node == nil {
			return nil, fmt.Errorf("node %s: not in the snapshot", a.Node)
		}
		pt, patch, err := patchFor(node, a)
		if err != nil {
			return nil, err
		}
		if patch == nil {
			return nil, nil // the fresher node needs nothing this action would write
		}
		wctx := ctx
		if a.Type != plan.Enter && a.Type != plan.Adopt {
			wctx = ratelimit.WithCheck(ctx, nil) // re-planned into another write: the check is an entry's
		}
		if err := ratelimit.Check(wctx); err != nil {
			return nil, err // without a client-side limit, nothing else checks before the request
		}
		patched, err := e.client.CoreV1().Nodes().Patch(wctx, node.Name, pt, patch, metav1.PatchOptions{FieldManager: fieldManager})
		if errors.Is(err, errHeld) {
			return nil, err // stopped by the check once the rate limiter gave it a token: not sent
		}
		if err != nil && outcomeUnknown(err) {
			// No answer (a connection lost, a timeout): the patch may have been applied all the
			// same. Its values (timestamps included) tell: then it is done, and its Event and
			// metric are not lost with the response.
			if landed := e.landed(reads, node, a); landed != nil {
				e.log.Debug("patch applied though its response was lost", "node", a.Node, "action", a.Type, "error", err)
				patched, err = landed, nil
			} else if pt == types.MergePatchType {
				err = &UnknownOutcomeError{Before: node.ResourceVersion, Err: err}
			} else {
				err = fmt.Errorf("%s: %w", noAnswer, err)
			}
		}
		switch {
		case err == nil:
			// Kept until the cycle ends (Result.Written): trimmed like the snapshot's nodes, or
			// a cycle entering hundreds of nodes holds each one's managed fields and images.
			e.TrimNode(patched)
			e.logAction(ctx, "", a)
			e.metrics.Transition(node, a, e.clock.Now())
			e.emit(ctx, node, a)
			return &Written{Action: a, Before: node.ResourceVersion, Node: patched}, nil
		case apierrors.IsNotFound(err):
			e.log.Info("node deleted; forgetting it", "node", a.Node)
			return nil, nil
		case !apierrors.IsConflict(err) && !(pt == types.JSONPatchType && notApplicable(err)):
			// A JSON patch whose test operations fail is refused as invalid: like a conflict.
			// A refusal of the result (validation, an admission policy) is an error as any.
			return nil, fmt.Errorf("patching node %s (%s): %w", a.Node, a.Type, err)
		case attempt >= maxConflictRetries:
			return nil, fmt.Errorf("patching node %s (%s): still conflicting after %d re-reads: %w", a.Node, a.Type, attempt, err)
		}
		// Conflict: someone else wrote the node. Re-read it and re-plan with the fresh object.
		fresh, err := e.client.CoreV1().Nodes().Get(reads, node.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("re-reading node %s after a conflict: %w", node.Name, err)
		}
		e.log.Debug("conflict; re-planning", "node", node.Name, "attempt", attempt+1)
		next, ok := e.replanNode(snap, fresh, a.Type, replan)
		if !ok {
			e.TrimNode(fresh)
			return &Written{Action: a, Before: node.ResourceVersion, Node: fresh, Unchanged: true}, nil
		}
		node, a = fresh, next
	}
}

// notApplicable reports whether a JSON patch was refused because it does not apply to the node as
// it is now (a test operation failed, a path it removes is gone): the API server answers that
// with a bare 422 Invalid that names no object and no field and carries only the generic message
// (patchNotApplicable). Validation and admission refuse the patched node with 422 too (a
// ValidatingAdmissionPolicy does by default, a webhook may), but name the object, give causes or
// say who denied it: re-reading the node would not change their answer.
func notApplicable(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) {
		return false
	}
	st := status.Status()
	d := st.Details
	return st.Message == patchNotApplicable && (d == nil || (d.Kind == "" && d.Name == "" && len(d.Causes) == 0))
}

// patchNotApplicable is the message of the API server's answer to a JSON patch that does not
// apply (k8s.io/apiserver's patch handler, through apierrors.NewGenericServerResponse: a 422 keeps
// none of the patch library's own message).
const patchNotApplicable = "the server rejected our request due to an error in our request"

// UnknownOutcomeError is a node patch guarded by the node's resourceVersion (every write but a
// warm release or a warm timeout, which are JSON patches) that got no answer (a lost connection, a timeout) and that a re-read did not show
// applied, or could not make: the API server may still apply it, but only over version Before. The
// node's state is known again once a version after Before is seen.
type UnknownOutcomeError struct {
	Before string
	Err    error
}

func (e *UnknownOutcomeError) Error() string { return noAnswer + ": " + e.Err.Error() }
func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// noAnswer says what an error without a response means for a write: it may have been applied.
const noAnswer = "no answer, so it may have been applied"

// outcomeUnknown reports whether err leaves open whether the API server applied the request: no
// response at all, or a timeout answer.
func outcomeUnknown(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true
	}
	return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)
}

// landedReadTimeout bounds landed's re-read once the command's context has ended.
const landedReadTimeout = 5 * time.Second

// landed re-reads node after a write whose outcome is unknown and returns it if it carries the
// action's change, written over the version the write was based on; nil otherwise, or when it
// cannot be read. Also once ctx has ended (SIGTERM while the write was in flight), within
// landedReadTimeout: a write that landed then is still said, its Event written and counted.
func (e *Engine) landed(ctx context.Context, node *corev1.Node, a plan.Action) *corev1.Node {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), landedReadTimeout)
		defer cancel()
	}
	fresh, err := e.client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil || !Newer(fresh, node) || !carries(fresh, a.Change) {
		return nil
	}
	return fresh
}

// replanNode re-runs the planner with one node replaced by its fresh copy and returns that
// node's action, if it still has one. Only an entry depends on other nodes (the maxConcurrent
// budget), so the node is first planned alone, and the whole snapshot is planned again only when
// that gives an entry: a conflict costs O(1) planning, not O(pool), in a burst of them.
//
// The maintenances read from the node itself (nodeLabel, cordoned) are re-derived from the fresh
// copy; those of maintenance objects are the snapshot's.
//
// An action of another type (was) never becomes an entry: the snapshot misses the entries of
// the same plan being written alongside (and, in the event-driven mode, may hold a few nodes
// only), so maxConcurrent cannot be counted from it. The next plan enters the node. Nor does
// one that is neither an entry nor an adoption become an adoption, which counts against
// maxConcurrent too: the event-driven mode holds entries back while one is in flight, and
// knows the write only by the type it handed out. The next plan adopts the node.
func (e *Engine) replanNode(snap plan.Snapshot, fresh *corev1.Node, was plan.ActionType, replan func(plan.Snapshot) plan.Plan) (plan.Action, bool) {
	var ms []plan.Maintenance
	for _, m := range snap.Maintenance[fresh.Name] {
		if m.Source == plan.SourceNodeMaintenance {
			ms = append(ms, m)
		}
	}
	ms = append(ms, e.sources.CollectFrom([]*corev1.Node{fresh}, nil, true).Maintenance[fresh.Name]...)
	alone := snap
	alone.Nodes = []*corev1.Node{fresh}
	alone.Maintenance = map[string][]plan.Maintenance{fresh.Name: ms}
	a, ok := actionFor(replan(alone), fresh.Name)
	if ok && a.Type == plan.Adopt && was != plan.Enter && was != plan.Adopt {
		return plan.Action{}, false
	}
	if !ok || a.Type != plan.Enter {
		return a, ok
	}
	if was != plan.Enter {
		return plan.Action{}, false
	}
	maintenance := make(map[string][]plan.Maintenance, len(snap.Maintenance)+1)
	for name, v := range snap.Maintenance {
		maintenance[name] = v
	}
	maintenance[fresh.Name] = ms
	snap.Maintenance = maintenance
	nodes := make([]*corev1.Node, len(snap.Nodes))
	for i, n := range snap.Nodes {
		if n.Name == fresh.Name {
			n = fresh
		}
		nodes[i] = n
	}
	snap.Nodes = nodes
	return actionFor(replan(snap), fresh.Name)
}

// patchFor renders the action's change: a release decided on our own keys alone as a JSON patch
// guarded by test operations on them (releasePatch), anything else as a merge patch guarded by
// the resourceVersion. A nil patch means there is nothing to write.
func patchFor(node *corev1.Node, a plan.Action) (types.PatchType, []byte, error) {
	if a.Type == plan.Release && restsOnOurKeys(node, a.Reason) {
		if patch, ok, err := releasePatch(node, a.Change); ok {
			return types.JSONPatchType, patch, err
		}
	}
	patch, err := mergePatch(node, a.Change)
	return types.MergePatchType, patch, err
}

// restsOnOurKeys reports whether a release of node for the reason is decided on what
// releasePatch tests (our annotations, the status label and our taint where it is) and on
// objects other than the node (the warmer pod, the clock). A left-pool release rests on the pool
// labels too; a cancelled one, and the timeout of a node still waiting for its upgrade
// (maxWaitForUpgrade), on the node's status (not rebooted onto the target); an external one on
// our taint's absence (which a JSON patch cannot test): a change to those between the read and
// the write must send it back for a re-read, which only the resourceVersion guards. None is
// frequent, and none is what a user waits for: warm releases, and the warm timeout, keep the
// JSON patch.
func restsOnOurKeys(node *corev1.Node, reason string) bool {
	switch reason {
	case state.ReasonLeftPool, state.ReasonCancelled, state.ReasonExternal:
		return false
	case state.ReasonTimeout:
		return state.PhaseOf(node) != state.PhaseTainted
	}
	return true
}

// Newer reports whether a is a later version of a node than b; versions that cannot be compared
// (not the integers the API server has guaranteed since Kubernetes 1.35) are not.
func Newer(a, b *corev1.Node) bool {
	cmp, err := resourceversion.CompareResourceVersion(a.ResourceVersion, b.ResourceVersion)
	return err == nil && cmp > 0
}

func actionFor(p plan.Plan, node string) (plan.Action, bool) {
	for _, a := range p.Actions {
		if a.Node == node {
			return a, true
		}
	}
	return plan.Action{}, false
}

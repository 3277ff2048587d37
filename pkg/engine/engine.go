// Package engine is the Kubernetes I/O around the pure planner: it observes the cluster into a
// plan.Snapshot, asks the planner for actions, and applies them as conflict-guarded patches with
// Events. The one-shot CronJob mode and the event-driven mode share it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
)

// maxConflictRetries bounds re-read/re-plan/retry rounds for one node within one cycle.
const maxConflictRetries = 5

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
	}
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

// Result summarises one cycle.
type Result struct {
	// Plan is what the planner decided (in dry-run mode, what would have been done).
	Plan plan.Plan
	// Applied counts the actions written, by type.
	Applied map[plan.ActionType]int
	// Warnings are objects the sources skipped.
	Warnings []sources.Warning
}

// RunOnce observes, plans and applies one cycle. It returns an error when the cycle could not
// complete (API unreachable, RBAC denied, a patch that kept failing); nodes still waiting for
// their upgrade or warmer pod are normal.
func (e *Engine) RunOnce(ctx context.Context) (Result, error) {
	obs, err := e.Observe(ctx)
	if err != nil {
		return Result{}, err
	}
	for _, w := range obs.Warnings {
		e.log.Warn("maintenance source: "+w.Message, "source", w.Source, "object", w.Object)
	}
	p := e.planner.Compute(obs.Snapshot)
	return e.apply(ctx, obs, p, e.planner.Compute)
}

// Cleanup releases every node this installation manages (reason cleanup).
func (e *Engine) Cleanup(ctx context.Context) (Result, error) {
	obs, err := e.Observe(ctx)
	if err != nil {
		return Result{}, err
	}
	return e.apply(ctx, obs, e.planner.Cleanup(obs.Snapshot), e.planner.Cleanup)
}

// apply writes the plan's actions. On a conflict it re-reads the node, re-plans with the fresh
// object and retries; other nodes are applied regardless of one node's failure.
func (e *Engine) apply(ctx context.Context, obs Observation, p plan.Plan, replan func(plan.Snapshot) plan.Plan) (Result, error) {
	res := Result{Plan: p, Applied: map[plan.ActionType]int{}, Warnings: obs.Warnings}
	for _, n := range p.Notes {
		e.log.Info(n.Message, "node", n.Node)
	}
	if e.dryRun {
		for _, a := range p.Actions {
			e.log.Info("dry run: would "+string(a.Type), "node", a.Node, "reason", a.Reason, "message", a.Message)
		}
		return res, nil
	}
	nodes := make(map[string]*corev1.Node, len(obs.Snapshot.Nodes))
	for _, n := range obs.Snapshot.Nodes {
		nodes[n.Name] = n
	}
	var errs []error
	for _, a := range p.Actions {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		applied, err := e.applyNode(ctx, obs.Snapshot, nodes[a.Node], a, replan)
		if err != nil {
			errs = append(errs, err)
			e.log.Error("applying action failed", "node", a.Node, "action", a.Type, "error", err)
			continue
		}
		if applied != nil {
			res.Applied[applied.Type]++
		}
	}
	return res, errors.Join(errs...)
}

// applyNode patches one node, re-planning it on conflict. It returns the action applied, or nil
// when a fresh read showed nothing left to do (or the node is gone).
func (e *Engine) applyNode(ctx context.Context, snap plan.Snapshot, node *corev1.Node, a plan.Action, replan func(plan.Snapshot) plan.Plan) (*plan.Action, error) {
	for attempt := 0; ; attempt++ {
		if node == nil {
			return nil, fmt.Errorf("node %s: not in the snapshot", a.Node)
		}
		patch, err := mergePatch(node, a.Change)
		if err != nil {
			return nil, err
		}
		_, err = e.client.CoreV1().Nodes().Patch(ctx, node.Name, typesMergePatch, patch, metav1.PatchOptions{FieldManager: fieldManager})
		switch {
		case err == nil:
			e.log.Info(string(a.Type), "node", a.Node, "reason", a.Reason, "message", a.Message)
			e.emit(ctx, node, a)
			return &a, nil
		case apierrors.IsNotFound(err):
			e.log.Info("node deleted; forgetting it", "node", a.Node)
			return nil, nil
		case !apierrors.IsConflict(err):
			return nil, fmt.Errorf("patching node %s (%s): %w", a.Node, a.Type, err)
		case attempt >= maxConflictRetries:
			return nil, fmt.Errorf("patching node %s (%s): still conflicting after %d re-reads: %w", a.Node, a.Type, attempt, err)
		}
		// Conflict: someone else wrote the node. Re-read it and re-plan with the fresh object.
		fresh, err := e.client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("re-reading node %s after a conflict: %w", node.Name, err)
		}
		e.log.Debug("conflict; re-planning", "node", node.Name, "attempt", attempt+1)
		next, ok := replanNode(snap, fresh, replan)
		if !ok {
			return nil, nil
		}
		node, a = fresh, next
	}
}

// replanNode re-runs the planner with one node replaced by its fresh copy and returns that
// node's action, if it still has one.
func replanNode(snap plan.Snapshot, fresh *corev1.Node, replan func(plan.Snapshot) plan.Plan) (plan.Action, bool) {
	nodes := make([]*corev1.Node, len(snap.Nodes))
	for i, n := range snap.Nodes {
		if n.Name == fresh.Name {
			n = fresh
		}
		nodes[i] = n
	}
	snap.Nodes = nodes
	for _, a := range replan(snap).Actions {
		if a.Node == fresh.Name {
			return a, true
		}
	}
	return plan.Action{}, false
}

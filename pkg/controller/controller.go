// Package controller is the event-driven mode (`run` without --once): informers keep the
// objects one cycle needs in memory, any relevant change triggers a reconcile that builds the
// plan.Snapshot from the caches (no API reads), runs the same planner and applies through the
// same engine as run --once. Run adds leader election on a Lease and the HTTP endpoints.
//
// A change to a node or to a warmer pod re-plans that node alone: the planner's decisions about
// one node depend only on that node, its pods and its maintenances, except an entry, which also
// depends on how many nodes are already tainted (maxConcurrent). A reconcile that finds an entry
// therefore re-plans the whole pool, as do changes to the DaemonSet, its revisions or the
// maintenance source, the periodic resync (timers), and a follow-up at most a second after
// per-node work (node counts in /metrics, entries waiting for budget that a release freed).
// Planning the whole pool takes milliseconds; doing it on every pod event of a thousand nodes
// joining at once would not.
//
// Application is per node and asynchronous: each plan's actions are handed to the engine's
// workers, and the next plan skips nodes whose patch is still in flight, so a warmer pod turning
// Ready is acted upon at once even while a burst of other patches is being written.
package controller

import (
	"cmp"
	"context"
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
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/ratelimit"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// notServedConfirm is how long a watched maintenance resource must keep being answered as not
// served (404) before its source counts as empty: an API server that restarts can answer 404 for
// a custom resource it serves until its own caches have synced, and an empty source would take
// every node tainted for one of its objects out of maintenance. A variable for tests.
var notServedConfirm = sources.NotServedConfirm

// maintenanceSyncWait bounds how long Start waits for the nodeMaintenance cache to sync; the
// other caches it waits for without a bound (their reads are the product's core).
var maintenanceSyncWait = 10 * time.Second

// Defaults.
const (
	DefaultResync = 30 * time.Second
	// retryAfterError is how long a node waits to be written again after a failed write. Each
	// further failure in a row doubles the wait (see retryDelay), up to maxRetryAfterError, or
	// maxRetryAfterRefusal when the API server refused the write. The first retry comes soon,
	// since most failures pass (an API server restarting, a connection lost); the doubling keeps
	// a write that keeps failing from costing a request a second for as long as it fails.
	retryAfterError = time.Second
	// maxRetryAfterError caps the wait after failures that pass by themselves (no answer, 5xx,
	// 429, conflicts): once the API server is back, or throttles no more, each node waiting is
	// written within 30 s, and while it is not, one request per node every 30 s is little load.
	maxRetryAfterError = 30 * time.Second
	// maxRetryAfterRefusal caps the wait after a refusal (4xx: RBAC, a webhook, validation such
	// as annotations over 256 KiB), which only someone's fix lets through: the node is written
	// within 5 minutes of that fix (short against maxWaitForUpgrade's hours), and until then it
	// costs 12 requests (and error lines) an hour, not 3,600.
	maxRetryAfterRefusal = 5 * time.Minute
	// shutdownEventsWait bounds how long a leader that is shutting down waits for its Events.
	shutdownEventsWait = 10 * time.Second
)

// Options configure a Controller.
type Options struct {
	Config *config.Config
	Client kubernetes.Interface
	// WatchClient lists and watches for the informers; default Client. A client of its own
	// (own rate limiter and connection) keeps writes from queueing behind watch traffic.
	WatchClient kubernetes.Interface
	Dynamic     dynamic.Interface
	// Engine applies plans; it must be built from the same Config.
	Engine *engine.Engine
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Resync is how often the loop re-plans without a change, for the timers (cancelAfter,
	// timeouts). Default DefaultResync.
	Resync time.Duration
}

// Controller watches the cluster and reconciles on change.
type Controller struct {
	cfg     *config.Config
	client  kubernetes.Interface
	engine  *engine.Engine
	log     *slog.Logger
	metrics *metrics.Metrics
	resync  time.Duration
	nm      *sources.Collector

	poolFactory, labelledFactory, dsFactory, warmerFactory informers.SharedInformerFactory

	poolNodes, labelledNodes corelisters.NodeLister
	daemonSets               appslisters.DaemonSetLister
	revisions                appslisters.ControllerRevisionLister
	pods                     corelisters.PodLister
	podIndex                 cache.Indexer

	// The nodeMaintenance informer starts once the resource is served, and stops (nmStop) when
	// it no longer is; the next resync probes again. nmProbeFailed is set while the last probe
	// failed otherwise: whether the resource is served is then unknown (maintenanceReady).
	nmMu          sync.Mutex
	nmInformer    cache.SharedIndexInformer
	nmStop        context.CancelFunc
	nmStopped     <-chan struct{}
	nmSynced      bool
	nmProbeFailed bool
	// nmProbedAt is when the last probe returned; nmRetrying is set while a retry is scheduled.
	nmProbedAt time.Time
	nmRetrying bool
	// nmProbing is set while a probe runs (one at a time, in the background: a probe that hangs
	// must not hold the plans up); nmAwaited while plans must wait for its answer (the
	// takeover's: the source is unknown until then).
	nmProbing, nmAwaited bool
	// nmGoneAt is when the watched resource was first answered as not served (zero when it is
	// watched, or was not served from the start): until probes confirm it for notServedConfirm,
	// the source is unknown rather than empty (maintenanceGone). A leader's probe that finds it
	// not served while a node it manages records one of its objects starts the same confirmation
	// (once a term: nmConfirmed says it was done, until the resource is watched again).
	nmGoneAt    time.Time
	nmConfirmed bool
	// nmReads follows whether the watched informer's cache may be stale.
	nmReads *maintenanceReads

	synced atomic.Bool
	// dirty wakes the loop; what to re-plan is in pending and full (under mu).
	dirty chan struct{}

	mu     sync.Mutex
	ledger *ledger
	// overlay holds nodes as our own patches left them until the informer delivers that
	// version (or a later one), so a plan never works from a node older than our last write.
	overlay map[string]engine.Written
	// pending are the nodes to re-plan; full asks for the whole pool (and makes pending
	// pointless: a standby, which never reconciles, keeps it set and pending empty); followUp is
	// set while a whole-pool re-plan is scheduled after per-node work.
	pending  map[string]bool
	full     bool
	followUp bool
	// waitingSince is when plans started to wait for the maintenance source (zero: they do
	// not); waitWarned when that was last logged at WARN.
	waitingSince, waitWarned time.Time
	warnings                 []sources.Warning
	notes                    []plan.Note
	wg                       sync.WaitGroup

	// live are the warmer's ControllerRevisions as read from the API server once the DaemonSet
	// controller observed the generation in liveFor (see revisionsFor).
	live    []*appsv1.ControllerRevision
	liveFor generationOf
	// liveFailed is when the last read of the revisions failed: the next waits retryAfterError,
	// or every per-node plan of a burst would send one more.
	liveFailed time.Time
}

// generationOf identifies one observed spec of one DaemonSet.
type generationOf struct {
	uid        types.UID
	generation int64
}

// New returns a controller; Start begins watching.
func New(o Options) (*Controller, error) {
	if o.Config == nil || o.Client == nil || o.Engine == nil {
		return nil, errors.New("controller: config, client and engine are required")
	}
	if o.Config.Maintenance.NodeMaintenance.Enabled && o.Dynamic == nil {
		return nil, errors.New("controller: the nodeMaintenance source needs a dynamic client")
	}
	c := &Controller{
		cfg: o.Config, client: o.Client, engine: o.Engine, log: o.Logger, metrics: o.Metrics, resync: o.Resync,
		nm:      sources.NewCollector(o.Config, o.Dynamic),
		dirty:   make(chan struct{}, 1),
		ledger:  newLedger(),
		overlay: map[string]engine.Written{},
		pending: map[string]bool{},
		full:    true,
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.resync <= 0 {
		c.resync = DefaultResync
	}
	labelled, err := labels.NewRequirement(o.Config.StatusLabel.Key, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("status label %s: %w", o.Config.StatusLabel.Key, err)
	}
	// DaemonSet pods and ControllerRevisions carry controller-revision-hash; this keeps the
	// orchestrator's own pods and unrelated Jobs out of the cache.
	revisionHash, err := labels.NewRequirement(appsv1.DefaultDaemonSetUniqueLabelKey, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("label %s: %w", appsv1.DefaultDaemonSetUniqueLabelKey, err)
	}
	ns := o.Config.Warmer.Namespace
	watchClient := o.WatchClient
	if watchClient == nil {
		watchClient = o.Client
	}
	trimNodes := func(obj any) (any, error) {
		if n, ok := obj.(*corev1.Node); ok {
			o.Engine.TrimNode(n)
			return n, nil
		}
		return stripManagedFields(obj)
	}
	factory := func(opts ...informers.SharedInformerOption) informers.SharedInformerFactory {
		return informers.NewSharedInformerFactoryWithOptions(watchClient, 0, append(opts, informers.WithTransform(trimNodes))...)
	}
	withLabels := func(sel string) informers.SharedInformerOption {
		return informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = sel })
	}
	c.poolFactory = factory(withLabels(o.Config.PoolSelector().String()))
	c.labelledFactory = factory(withLabels(labels.NewSelector().Add(*labelled).String()))
	c.dsFactory = factory(informers.WithNamespace(ns), informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", o.Config.Warmer.DaemonSetName).String()
	}))
	c.warmerFactory = factory(informers.WithNamespace(ns), withLabels(labels.NewSelector().Add(*revisionHash).String()))

	nodeHandler := cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.triggerNode(objectName(obj)) },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if ok1 && ok2 && !nodeChanged(o, n) {
				return
			}
			if ok1 && ok2 && o.UID != n.UID {
				// Deleted and created again while the watch was down: the relist's update.
				c.forgetFailures(n.Name)
			}
			c.triggerNode(objectName(newObj))
		},
		// A node leaving one informer's selection (the status label informer, on release) may
		// still be in the other, at an older version: the overlay stays until cached() sees the
		// node gone from both or caught up.
		DeleteFunc: func(obj any) {
			name := objectName(obj)
			c.forgetFailures(name)
			c.triggerNode(name)
		},
	}
	podHandler := cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.triggerNode(podNode(obj)) },
		UpdateFunc: func(oldObj, newObj any) {
			if o, n := podNode(oldObj), podNode(newObj); o != n {
				c.triggerNode(o)
			}
			c.triggerNode(podNode(newObj))
		},
		DeleteFunc: func(obj any) { c.triggerNode(podNode(obj)) },
	}
	trigger := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.Trigger() },
		UpdateFunc: func(any, any) { c.Trigger() },
		DeleteFunc: func(any) { c.Trigger() },
	}
	for _, f := range []struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{c.poolFactory.Core().V1().Nodes().Informer(), nodeHandler},
		{c.labelledFactory.Core().V1().Nodes().Informer(), nodeHandler},
		{c.dsFactory.Apps().V1().DaemonSets().Informer(), trigger},
		{c.warmerFactory.Apps().V1().ControllerRevisions().Informer(), trigger},
		{c.warmerFactory.Core().V1().Pods().Informer(), podHandler},
	} {
		if _, err := f.informer.AddEventHandler(f.handler); err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
	}
	c.poolNodes = c.poolFactory.Core().V1().Nodes().Lister()
	c.labelledNodes = c.labelledFactory.Core().V1().Nodes().Lister()
	c.daemonSets = c.dsFactory.Apps().V1().DaemonSets().Lister()
	c.revisions = c.warmerFactory.Apps().V1().ControllerRevisions().Lister()
	c.pods = c.warmerFactory.Core().V1().Pods().Lister()
	c.podIndex = c.warmerFactory.Core().V1().Pods().Informer().GetIndexer()
	if err := c.warmerFactory.Core().V1().Pods().Informer().AddIndexers(cache.Indexers{byNodeIndex: func(obj any) ([]string, error) {
		if n := podNode(obj); n != "" {
			return []string{n}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("adding the pod index: %w", err)
	}
	return c, nil
}

// byNodeIndex indexes warmer pods by the node they are for (plan.PodNode): bound or not yet.
const byNodeIndex = "node"

// maintenanceWaitWarning is how long the maintenance source may stay unknown before a WARN says so
// (a variable for tests).
var maintenanceWaitWarning = 10 * time.Second

// noteMaintenanceWait records whether a plan at now has the maintenance source read (known) or
// waits for it, and returns how long the current wait has lasted and whether to say so at WARN:
// once it has lasted maintenanceWaitWarning, and then at most once per resync, which drives plans
// while nothing else does (a tenth of it spares the ticker's jitter). A plan with the source read
// ends the wait, so a later one is counted, and warned about, from its own start.
func (c *Controller) noteMaintenanceWait(now time.Time, known bool) (waited time.Duration, warn bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if known {
		c.waitingSince = time.Time{}
		return 0, false
	}
	if c.waitingSince.IsZero() {
		c.waitingSince = now
	}
	waited = now.Sub(c.waitingSince)
	warn = waited >= maintenanceWaitWarning && now.Sub(c.waitWarned) >= c.resync*9/10
	if warn {
		c.waitWarned = now
	}
	return waited, warn
}

// fullFollowUp is how soon after per-node work the whole pool is re-planned.
const fullFollowUp = time.Second

// forgetFailures ends the streak of failed writes of a node that was deleted or left one of
// the informers' selections: a node created again under the same name (a cloud provider's
// upgrade may recreate the machine) is written at once, not after the retry time its
// predecessor's failures earned (up to 5 minutes). A whole-pool plan would forget the streak
// too, but only one that runs while the name is gone. A node that merely left a selection
// loses at most the wait before one retry.
func (c *Controller) forgetFailures(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ledger.forget(func(node string) bool { return node != name })
}

func objectName(obj any) string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if a, err := meta.Accessor(obj); err == nil {
		return a.GetName()
	}
	return ""
}

func podNode(obj any) string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if p, ok := obj.(*corev1.Pod); ok {
		return plan.PodNode(p)
	}
	return ""
}

// Start starts the informers and waits until their caches are synced. The informers run until
// ctx ends. Standby replicas call it too, so that a takeover starts from warm caches.
func (c *Controller) Start(ctx context.Context) error {
	for _, f := range []informers.SharedInformerFactory{c.poolFactory, c.labelledFactory, c.dsFactory, c.warmerFactory} {
		f.Start(ctx.Done())
	}
	if c.cfg.Maintenance.NodeMaintenance.Enabled {
		if _, err := c.startMaintenanceInformer(ctx); err != nil {
			// Served or not is unknown: planning as if it were not would take every node tainted
			// for a maintenance object out of maintenance. Plans go without the source
			// (maintenanceReady), warm releases and timeouts included, and probes retry every
			// retryAfterError, rather than the process exit and every replica crash-loop.
			c.log.Warn("probing the maintenance resource failed; no node is entered or leaves maintenance until a probe succeeds",
				"error", err, "retryIn", retryAfterError.String())
			c.nmMu.Lock()
			c.nmProbeFailed, c.nmProbedAt = true, time.Now()
			c.nmMu.Unlock()
		}
	}
	for _, f := range []informers.SharedInformerFactory{c.poolFactory, c.labelledFactory, c.dsFactory, c.warmerFactory} {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("waiting for the %v cache to sync: %w", typ, context.Cause(ctx))
			}
		}
	}
	c.nmMu.Lock()
	inf, stopped := c.nmInformer, c.nmStopped
	c.nmMu.Unlock()
	if inf != nil {
		// stopped closes when ctx ends, or when the informer is stopped (maintenanceGone). A
		// list that keeps failing (a conversion webhook down, throttling) does not hold the
		// start-up past maintenanceSyncWait: the cache goes on syncing in the background, and
		// plans meanwhile go without the source (releases of warm nodes and timeouts included)
		// rather than no replica becoming ready, or leading.
		waitCtx, endWait := context.WithTimeout(ctx, maintenanceSyncWait)
		go func() {
			select {
			case <-stopped:
				endWait()
			case <-waitCtx.Done():
			}
		}()
		synced := cache.WaitForCacheSync(waitCtx.Done(), inf.HasSynced)
		endWait()
		switch {
		case synced:
			c.nmMu.Lock()
			c.nmSynced = c.nmInformer == inf
			c.nmMu.Unlock()
		case ctx.Err() != nil:
			return fmt.Errorf("waiting for the %s cache to sync: %w", sources.ResourceName(c.cfg), context.Cause(ctx))
		case chanClosed(stopped):
			// Stopped before it synced: the resource went away meanwhile (maintenanceGone),
			// and plans report it as not served.
		default:
			c.log.Warn("the maintenance resource's cache has not synced; planning without it until it does: no node is entered, and no tainted node leaves maintenance",
				"resource", sources.ResourceName(c.cfg), "waited", maintenanceSyncWait.String())
			go c.syncMaintenance(inf, stopped, "maintenance resource's cache synced; planning with it")
		}
	}
	c.synced.Store(true)
	c.log.Info("caches synced")
	return nil
}

// Synced reports whether Start has synced every cache: what /readyz answers.
func (c *Controller) Synced() bool { return c.synced.Load() }

// startMaintenanceInformer starts the nodeMaintenance informer when the resource is served;
// when it is not (CRD not installed), the source is empty, a warning says so, and the next
// resync probes again. It returns whether the resource is served, and an error when the probe
// failed otherwise (whether the resource is served is then unknown).
func (c *Controller) startMaintenanceInformer(ctx context.Context) (served bool, err error) {
	c.nmMu.Lock()
	watching := c.nmInformer != nil
	c.nmMu.Unlock()
	if watching {
		return true, nil
	}
	// Not under nmMu: plans read the source's state meanwhile, however long the answer takes.
	gvr := sources.GVR(c.cfg)
	_, err = c.nm.Resource().List(ctx, metav1.ListOptions{Limit: 1})
	switch {
	case notServed(err):
		return false, nil // reported as a warning by every plan while not served
	case err != nil:
		return false, fmt.Errorf("probing %s: %w", sources.ResourceName(c.cfg), err)
	}
	c.nmMu.Lock()
	defer c.nmMu.Unlock()
	if c.nmInformer != nil {
		return true, nil
	}
	c.nmGoneAt, c.nmConfirmed = time.Time{}, false
	reads := &maintenanceReads{log: c.log, resource: sources.ResourceName(c.cfg), changed: c.Trigger}
	inf := cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(reads.listWatch(c.nm.Resource()), c.nm.DynamicClient()),
		&unstructured.Unstructured{}, cache.SharedIndexInformerOptions{ObjectDescription: gvr.String()})
	reads.hasSynced = inf.HasSynced
	if err := inf.SetTransform(c.trimMaintenance); err != nil {
		c.log.Warn("setting the maintenance informer transform failed", "error", err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { reads.seen(obj); c.Trigger() },
		UpdateFunc: func(_, obj any) { reads.seen(obj); c.Trigger() },
		DeleteFunc: func(any) { c.Trigger() },
	}); err != nil {
		c.log.Warn("adding the maintenance event handler failed", "error", err)
		return true, nil
	}
	// The resource can go away while it is watched (its CRD deleted, its version no longer
	// served): the informer would then re-list it forever, logging each failure, and plans
	// would go on reading it as a served source with no objects. It is stopped instead, and once
	// probes confirm it gone, plans warn that the source is not served and each resync probes
	// for it again.
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if notServed(err) {
			c.maintenanceGone(inf, err)
			return
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}); err != nil {
		c.log.Warn("setting the maintenance watch error handler failed", "error", err)
	}
	infCtx, stop := context.WithCancel(ctx)
	c.nmInformer, c.nmStop, c.nmStopped, c.nmReads = inf, stop, infCtx.Done(), reads
	go inf.RunWithContext(infCtx)
	if c.synced.Load() {
		// Started after start-up (the CRD appeared): sync in the background, then re-plan.
		go c.syncMaintenance(inf, infCtx.Done(), "maintenance resource is now served; watching it")
	}
	return true, nil
}

// syncMaintenance waits in the background for the nodeMaintenance informer inf to sync (until
// stopped closes: ctx ended, or the resource went away again), then marks the source known,
// logs msg and re-plans. Until then plans have the source unknown (maintenanceReady).
func (c *Controller) syncMaintenance(inf cache.SharedIndexInformer, stopped <-chan struct{}, msg string) {
	if !cache.WaitForCacheSync(stopped, inf.HasSynced) {
		return
	}
	c.nmMu.Lock()
	current := c.nmInformer == inf
	if current {
		c.nmSynced = true
	}
	c.nmMu.Unlock()
	if current {
		c.log.Info(msg, "resource", sources.ResourceName(c.cfg))
		c.Trigger()
	}
}

// maintenanceGone stops the nodeMaintenance informer inf, whose resource the API server answered
// as not served (err says how). The source is unknown until probes, one every retryAfterError,
// confirm it for notServedConfirm (a restarting API server answers 404 for a while) or find it
// served again (probeMaintenance); once confirmed, plans report it as not served, and each
// resync probes again.
func (c *Controller) maintenanceGone(inf cache.SharedIndexInformer, err error) {
	c.nmMu.Lock()
	if c.nmInformer != inf {
		c.nmMu.Unlock()
		return // already stopped
	}
	c.nmStop()
	c.nmInformer, c.nmStop, c.nmStopped, c.nmSynced = nil, nil, nil, false
	c.nmGoneAt, c.nmProbeFailed, c.nmProbedAt = time.Now(), true, time.Now()
	c.nmMu.Unlock()
	c.log.Info("maintenance resource answered as not served; confirming before its source counts as empty",
		"resource", sources.ResourceName(c.cfg), "within", notServedConfirm.String(), "error", err)
	c.Trigger()
}

// chanClosed reports whether ch is closed (it is never sent on).
func chanClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// notServed reports whether err says the API server does not serve the resource asked for.
func notServed(err error) bool {
	return apierrors.IsNotFound(err) || meta.IsNoMatchError(err)
}

// Trigger asks for a reconcile of the whole pool; triggers that arrive while one is pending
// coalesce.
func (c *Controller) Trigger() {
	c.mu.Lock()
	c.full = true
	c.mu.Unlock()
	c.wake()
}

// triggerNode asks for a reconcile of one node.
func (c *Controller) triggerNode(name string) {
	if name == "" {
		return
	}
	c.mu.Lock()
	if !c.full {
		c.pending[name] = true
	}
	c.mu.Unlock()
	c.wake()
}

func (c *Controller) wake() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// Lead reconciles until ctx ends: on every relevant change, every Resync, and after each
// applied batch. It returns once the patches in flight have returned.
func (c *Controller) Lead(ctx context.Context) error {
	if !c.Synced() {
		return errors.New("controller: Lead called before the caches synced")
	}
	c.metrics.SetLeader(true)
	defer c.metrics.SetLeader(false)
	ticker := time.NewTicker(c.resync)
	defer ticker.Stop()
	// A standby that saw the maintenance resource go away probes for it as it takes over, rather
	// than a resync later; a 404 it is still confirming is confirmed from now (it saw it while
	// not probing, and takeovers come with API server restarts).
	c.nmMu.Lock()
	if !c.nmGoneAt.IsZero() {
		c.nmGoneAt = time.Now()
	}
	c.nmConfirmed = false
	c.nmAwaited = c.cfg.Maintenance.NodeMaintenance.Enabled
	c.nmMu.Unlock()
	c.probeInBackground(ctx)
	c.Trigger()
	for {
		select {
		case <-ctx.Done():
			c.wg.Wait()
			// Events are best-effort: a slow Events API must not hold the process past the
			// Deployment's grace period (30 s), where it would be killed and exit non-zero.
			if !c.engine.WaitEventsFor(shutdownEventsWait) {
				c.log.Warn("shutting down with Events not yet written", "waited", shutdownEventsWait.String())
			}
			return nil
		case <-ticker.C:
			c.probeInBackground(ctx)
			c.mu.Lock()
			c.full = true
			c.mu.Unlock()
		case <-c.dirty:
		}
		if ctx.Err() != nil {
			// select picks at random among ready cases: a wake-up that came with the end of
			// leadership or SIGTERM plans nothing (its writes would fail as cancelled).
			continue
		}
		c.reconcile(ctx)
	}
}

// probeInBackground runs probeMaintenance in the background, unless a probe is running already,
// and re-plans the pool once it has answered.
func (c *Controller) probeInBackground(ctx context.Context) {
	if !c.cfg.Maintenance.NodeMaintenance.Enabled {
		return
	}
	c.nmMu.Lock()
	running := c.nmProbing
	c.nmProbing = true
	c.nmMu.Unlock()
	if running {
		return
	}
	go func() {
		c.probeMaintenance(ctx)
		c.nmMu.Lock()
		c.nmProbing, c.nmAwaited = false, false
		c.nmMu.Unlock()
		c.Trigger()
	}()
}

// probeMaintenance starts the nodeMaintenance informer if the source is enabled, not watched,
// and now served. A failed probe leaves the source unknown (maintenanceReady), and the first
// failure of a streak is logged.
func (c *Controller) probeMaintenance(ctx context.Context) {
	if !c.cfg.Maintenance.NodeMaintenance.Enabled {
		return
	}
	served, err := c.startMaintenanceInformer(ctx)
	records := !served && err == nil && c.recordsNodeMaintenance()
	c.nmMu.Lock()
	if err != nil && !c.nmGoneAt.IsZero() {
		// Not an answer either way: the 404s must last notServedConfirm from the next one.
		c.nmGoneAt = time.Now()
	}
	begins := records && c.nmGoneAt.IsZero() && !c.nmConfirmed
	if begins {
		c.nmGoneAt = time.Now()
	}
	gone := !served && err == nil && !c.nmGoneAt.IsZero()
	confirming := gone && time.Since(c.nmGoneAt) < notServedConfirm
	if gone && !confirming {
		c.nmGoneAt, c.nmConfirmed = time.Time{}, true
	}
	was := c.nmProbeFailed
	c.nmProbeFailed, c.nmProbedAt = err != nil || confirming, time.Now()
	c.nmMu.Unlock()
	switch {
	case begins:
		c.log.Info("maintenance resource answered as not served while a node managed here records one of its objects; confirming before its source counts as empty",
			"resource", sources.ResourceName(c.cfg), "within", notServedConfirm.String())
		return
	case confirming:
		return
	case gone:
		c.log.Warn("maintenance resource is no longer served; its source is empty until a resync finds it served again",
			"resource", sources.ResourceName(c.cfg), "resync", c.resync.String())
	case err != nil && !was:
		c.log.Warn("probing the maintenance resource failed; no node is entered or leaves maintenance until a probe succeeds", "error", err, "retryIn", retryAfterError.String())
	case err != nil:
		c.log.Debug("probing the maintenance resource failed again", "error", err)
	case was:
		c.log.Info("probing the maintenance resource succeeded; planning again", "resource", sources.ResourceName(c.cfg))
	}
}

// recordsNodeMaintenance reports whether a node in the caches that this installation manages
// records a nodeMaintenance object (plan.Planner.RecordsNodeMaintenance).
func (c *Controller) recordsNodeMaintenance() bool {
	for _, lister := range []corelisters.NodeLister{c.poolNodes, c.labelledNodes} {
		nodes, _ := lister.List(labels.Everything())
		if c.engine.Planner().RecordsNodeMaintenance(nodes) {
			return true
		}
	}
	return false
}

// maintenanceReady reports whether plans can read the nodeMaintenance source: off, not served,
// or watched with its cache synced. It is not while an informer started after start-up (a
// takeover, a resync that found the resource served) is syncing, nor while the last probe
// failed: a plan would read the source as not served, and take every node tainted for one of
// its objects (by another replica, before the takeover) out of maintenance, released cancelled
// with a short cancelAfter. Plans mark it unknown instead (plan.Snapshot.MaintenanceUnknown),
// which decides nothing that rests on maintenance; the informer's sync re-plans, and a failed
// probe is retried (in the background) after retryAfterError. Nor is it until the takeover's
// probe has answered, nor while the watched cache may be stale (maintenanceReads).
func (c *Controller) maintenanceReady(ctx context.Context) bool {
	if !c.cfg.Maintenance.NodeMaintenance.Enabled {
		return true
	}
	c.nmMu.Lock()
	failed, due := c.nmProbeFailed, time.Since(c.nmProbedAt) >= retryAfterError
	c.nmMu.Unlock()
	if failed && due {
		c.probeInBackground(ctx)
	}
	c.nmMu.Lock()
	defer c.nmMu.Unlock()
	failed, ready := c.nmProbeFailed || c.nmAwaited, c.nmInformer == nil || (c.nmSynced && !c.nmReads.stale())
	if failed && !c.nmRetrying && !c.nmProbing && ctx.Err() == nil {
		// One retry pending at a time, however many plans the events of the meantime ask for;
		// none while a probe runs (it re-plans once it has answered).
		c.nmRetrying = true
		time.AfterFunc(retryAfterError-time.Since(c.nmProbedAt), func() {
			c.nmMu.Lock()
			c.nmRetrying = false
			c.nmMu.Unlock()
			c.Trigger()
		})
	}
	return ready && !failed
}

// reconcile plans the whole pool, or the nodes that changed, from the caches and hands the
// actions of nodes not already being written to the engine.
func (c *Controller) reconcile(ctx context.Context) {
	start := time.Now()
	c.mu.Lock()
	full := c.full
	var names []string
	if !full {
		for n := range c.pending {
			names = append(names, n)
		}
	}
	c.full = false
	clear(c.pending)
	c.mu.Unlock()
	if !full && len(names) == 0 {
		return
	}
	known := c.maintenanceReady(ctx)
	if !known {
		// Plans go on without what rests on maintenance (plan.Snapshot.MaintenanceUnknown); the
		// whole pool is planned again once the source is read (maintenanceReady asks for it). A
		// wait that lasts (an informer whose list keeps failing) is said at WARN, once per resync.
		waited, warn := c.noteMaintenanceWait(time.Now(), false)
		level := slog.LevelDebug
		if warn {
			level = slog.LevelWarn
		}
		c.log.Log(ctx, level, "maintenance resource not read yet: no node is entered, and no tainted node leaves maintenance, until it is",
			"resource", sources.ResourceName(c.cfg), "waiting", waited.Round(time.Second).String())
	} else {
		c.noteMaintenanceWait(time.Now(), true)
	}

	cached, asOf, revisionsRead := c.cached(ctx, names, full)
	if !known {
		cached.MaintenanceUnknown = sources.ResourceName(c.cfg)
	}
	obs, err := c.engine.ObserveFrom(cached)
	if err != nil {
		c.log.Error("building the snapshot failed", "error", err)
		c.metrics.ObserveCycle("watch", time.Since(start), false, start)
		return
	}
	p := c.engine.Planner().Compute(obs.Snapshot)
	if full {
		c.logWarnings(ctx, obs.Warnings)
		c.logNotes(ctx, p.Notes)
		c.metrics.SetNodes(c.engine.Count(obs.Snapshot.Nodes))
	} else {
		// An entry depends on the whole pool (maxConcurrent): re-plan it all, now. Otherwise
		// refresh the pool-wide view (counts, entries waiting for budget) shortly.
		entry := slices.ContainsFunc(p.Actions, func(a plan.Action) bool { return a.Type == plan.Enter })
		p.Actions = slices.DeleteFunc(p.Actions, func(a plan.Action) bool { return a.Type == plan.Enter })
		p.EntriesOnReleases = 0
		if entry {
			c.Trigger()
		} else {
			c.scheduleFollowUp()
		}
	}

	c.mu.Lock()
	// A reconcile counts as a success (last_success_timestamp_seconds) when it planned the whole
	// pool, with the maintenance source and the warmer's revisions read, and every write it
	// wanted went through: not while a node's failing write waits for its retry, which would
	// otherwise pass for a plan with nothing to do, nor while no pod can count as warm.
	success := full && known && revisionsRead && cached.MaintenanceUnknown == "" && !c.ledger.backingOff(p.Actions)
	todo := plan.Plan{Actions: p.Actions, EntriesOnReleases: p.EntriesOnReleases}
	var replan bool
	if !c.engine.DryRun() {
		// A dry run writes nothing, so nothing it plans is ever in flight.
		todo.Actions, todo.EntriesOnReleases, replan = c.ledger.claim(p.Actions, p.EntriesOnReleases, asOf)
	}
	c.ledger.prune(asOf)
	c.mu.Unlock()
	if replan {
		c.Trigger() // entries held back for an entry this snapshot did not show: the whole pool, again
	}
	for _, a := range todo.Actions {
		c.log.Debug("planned", "node", a.Node, "action", a.Type, "reason", a.Reason)
	}
	if len(todo.Actions) == 0 {
		c.metrics.ObserveCycle("watch", time.Since(start), success, time.Now())
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// soonest is the earliest retry of this plan's failed writes (under c.mu).
		var soonest time.Duration
		// Each node leaves the in-flight set as soon as its own write returns, not when the whole
		// batch does: a node adopted early in a burst of a thousand is released as soon as its
		// warmer pod is Ready.
		_, err := c.engine.ApplyNotify(ctx, obs, todo, c.latest, func(a plan.Action, w *engine.Written, err error) {
			c.mu.Lock()
			if w != nil && w.Node != nil {
				c.overlay[w.Node.Name] = *w
			}
			entries, retryIn := c.ledger.finish(a.Node, err)
			if err != nil && (soonest == 0 || retryIn < soonest) {
				soonest = retryIn
			}
			c.mu.Unlock()
			switch {
			case err != nil:
				// Re-planned after retryIn, not at once: a write that keeps failing (RBAC, a
				// webhook, conflicts) would loop on the API. Until then the ledger holds back
				// any plan of the node. Entries that waited for this write go on now, failed
				// or not: its outcome is known.
				if ctx.Err() == nil {
					time.AfterFunc(retryIn, func() { c.triggerNode(a.Node) })
					if entries {
						c.Trigger()
					}
				}
			case entries:
				c.Trigger()
			default:
				c.triggerNode(a.Node)
			}
		})
		c.metrics.ObserveCycle("watch", time.Since(start), success && err == nil, time.Now())
		if err != nil && ctx.Err() == nil {
			c.mu.Lock()
			retryIn := cmp.Or(soonest, retryAfterError)
			c.mu.Unlock()
			c.log.Error("reconcile incomplete; retrying", "error", err, "retryIn", retryIn.String())
			time.AfterFunc(retryIn, c.Trigger)
		}
	}()
}

// scheduleFollowUp re-plans the whole pool fullFollowUp from now, unless that is already due.
func (c *Controller) scheduleFollowUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.followUp {
		return
	}
	c.followUp = true
	time.AfterFunc(fullFollowUp, func() {
		c.mu.Lock()
		c.followUp = false
		c.mu.Unlock()
		c.Trigger()
	})
}

// cached gathers the objects of one snapshot from the informer caches: the whole pool, or only
// the named nodes and their pods. It also returns the node writes that had returned when it
// was taken (see Controller.written), and whether the warmer's revisions were read (see
// revisionsFor).
func (c *Controller) cached(ctx context.Context, names []string, full bool) (out engine.Cached, asOf uint64, revisionsRead bool) {
	out = engine.Cached{MaintenanceServed: true}
	revisionsRead = true
	byName := map[string]*corev1.Node{}
	keep := func(n *corev1.Node) {
		if old, ok := byName[n.Name]; !ok || engine.Newer(n, old) {
			byName[n.Name] = n
		}
	}
	for _, lister := range []corelisters.NodeLister{c.poolNodes, c.labelledNodes} {
		if full {
			nodes, _ := lister.List(labels.Everything())
			for _, n := range nodes {
				keep(n)
			}
			continue
		}
		for _, name := range names {
			if n, err := lister.Get(name); err == nil {
				keep(n)
			}
		}
	}
	c.mu.Lock()
	asOf = c.ledger.asOf()
	for name, w := range c.overlay {
		n, ok := byName[name]
		switch {
		case !ok && !full:
			// Not part of this snapshot.
		case !ok:
			// We write only nodes the caches hold: this one was deleted or left both sets.
			delete(c.overlay, name)
		case ahead(w, n):
			byName[name] = w.Node
		default:
			delete(c.overlay, name)
		}
	}
	if full {
		c.ledger.forget(func(name string) bool { _, ok := byName[name]; return ok })
	}
	resume := c.ledger.settle(func(name string) (*corev1.Node, bool) { n, ok := byName[name]; return n, ok }, full)
	c.mu.Unlock()
	if resume {
		c.Trigger() // entries held back by an unanswered write: the whole pool, again
	}
	out.Nodes = make([]*corev1.Node, 0, len(byName))
	for _, n := range byName {
		out.Nodes = append(out.Nodes, n)
	}
	if ds, err := c.daemonSets.DaemonSets(c.cfg.Warmer.Namespace).Get(c.cfg.Warmer.DaemonSetName); err == nil {
		out.DaemonSet = ds
		cachedRevs, _ := c.revisions.ControllerRevisions(c.cfg.Warmer.Namespace).List(labels.Everything())
		out.Revisions, revisionsRead = c.revisionsFor(ctx, ds, cachedRevs)
		if full {
			out.Pods, _ = c.pods.Pods(c.cfg.Warmer.Namespace).List(labels.Everything())
		} else {
			for name := range byName {
				objs, _ := c.podIndex.ByIndex(byNodeIndex, name)
				for _, o := range objs {
					if p, ok := o.(*corev1.Pod); ok {
						out.Pods = append(out.Pods, p)
					}
				}
			}
		}
	}
	if c.cfg.Maintenance.NodeMaintenance.Enabled {
		c.nmMu.Lock()
		inf, synced, confirming := c.nmInformer, c.nmSynced, !c.nmGoneAt.IsZero()
		c.nmMu.Unlock()
		switch {
		case inf == nil && confirming:
			// Answered 404 since maintenanceReady said it was known: not empty until confirmed.
			out.MaintenanceUnknown = sources.ResourceName(c.cfg)
		case inf == nil:
			out.MaintenanceServed = false
		case !synced:
			// Started (by a probe in the background) since maintenanceReady was asked.
			out.MaintenanceUnknown = sources.ResourceName(c.cfg)
		default:
			for _, obj := range inf.GetStore().List() {
				if u, ok := obj.(*unstructured.Unstructured); ok && !isReadMark(u) {
					out.Maintenance = append(out.Maintenance, u)
				}
			}
		}
	}
	return out, asOf, revisionsRead
}

// revisionsFor returns the warmer's ControllerRevisions to plan with against ds. The DaemonSet
// controller writes a new revision before it records the new generation as observed, but the two
// reach this controller on separate watches: a DaemonSet seen observed with the revision cache
// behind would make the old revision current, and an old pod Ready on a warming node would
// release it with the old images. So once per observed generation the revisions are read from
// the API server, which serves them after that DaemonSet update, and merged with the cache (the
// newer version of each wins) until the next generation. A read that fails leaves no revision:
// no pod counts as warm in that plan, and a plan at least retryAfterError later reads again;
// read is false until one succeeds.
func (c *Controller) revisionsFor(ctx context.Context, ds *appsv1.DaemonSet, cached []*appsv1.ControllerRevision) (revs []*appsv1.ControllerRevision, read bool) {
	if ds.Status.ObservedGeneration < ds.Generation {
		return cached, true // no revision is current yet
	}
	key := generationOf{ds.UID, ds.Status.ObservedGeneration}
	c.mu.Lock()
	live, known, failed := c.live, c.liveFor == key, c.liveFailed
	c.mu.Unlock()
	if !known {
		if time.Since(failed) < retryAfterError {
			return nil, false
		}
		// Urgent for the client's rate limiter: every plan, releases included, waits for this
		// read, which must not queue behind a burst of entries or adoptions.
		list, err := c.client.AppsV1().ControllerRevisions(ds.Namespace).List(ratelimit.Urgent(ctx),
			metav1.ListOptions{LabelSelector: appsv1.DefaultDaemonSetUniqueLabelKey})
		if err != nil {
			c.log.Warn("reading the warmer's revisions failed; retrying in a second", "error", err)
			c.mu.Lock()
			c.liveFailed = time.Now()
			c.mu.Unlock()
			time.AfterFunc(retryAfterError, c.Trigger)
			return nil, false
		}
		live = make([]*appsv1.ControllerRevision, 0, len(list.Items))
		for i := range list.Items {
			live = append(live, &list.Items[i])
		}
		c.mu.Lock()
		c.live, c.liveFor = live, key
		c.mu.Unlock()
	}
	byName := make(map[string]*appsv1.ControllerRevision, len(cached)+len(live))
	for _, r := range append(slices.Clone(cached), live...) {
		if old, ok := byName[r.Name]; !ok || newerObject(r.ResourceVersion, old.ResourceVersion) {
			byName[r.Name] = r
		}
	}
	out := make([]*appsv1.ControllerRevision, 0, len(byName))
	for _, r := range byName {
		out = append(out, r)
	}
	return out, true
}

// newerObject reports whether resourceVersion a is later than b (versions that cannot be
// compared are not).
func newerObject(a, b string) bool {
	cmp, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && cmp > 0
}

// latest returns the most recent version of a node the controller knows (informer caches or its
// own last write), nil when it knows none. The engine checks a queued action against it before
// writing, so an action that waited for a slot is not sent with a version known to be stale.
func (c *Controller) latest(name string) *corev1.Node {
	var best *corev1.Node
	for _, lister := range []corelisters.NodeLister{c.poolNodes, c.labelledNodes} {
		if n, err := lister.Get(name); err == nil && (best == nil || engine.Newer(n, best)) {
			best = n
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.overlay[name]; ok && (best == nil || ahead(w, best)) {
		best = w.Node
	}
	return best
}

// ahead reports whether our write w is more recent than the cached node n.
func ahead(w engine.Written, n *corev1.Node) bool {
	if cmp, err := resourceversion.CompareResourceVersion(n.ResourceVersion, w.Node.ResourceVersion); err == nil {
		return cmp < 0
	}
	// Resource versions that are not comparable integers: the cache is behind our write only
	// while it still holds the version our patch was guarded by.
	return n.ResourceVersion == w.Before
}

// logWarnings logs the sources' warnings when they change, not at every reconcile. They are
// compared in order of source, object and message: the informer's store lists the maintenance
// objects, and so their warnings, in no particular order.
func (c *Controller) logWarnings(ctx context.Context, ws []sources.Warning) {
	ws = slices.Clone(ws)
	slices.SortFunc(ws, func(a, b sources.Warning) int {
		return cmp.Or(strings.Compare(a.Source, b.Source), strings.Compare(a.Object, b.Object), strings.Compare(a.Message, b.Message))
	})
	c.mu.Lock()
	same := slices.Equal(ws, c.warnings)
	c.warnings = ws
	c.mu.Unlock()
	if same {
		return
	}
	engine.LogWarnings(ctx, c.log, ws)
}

// logNotes logs the planner's notes (nodes waiting for the budget, skipped nodes, a missing
// warmer DaemonSet at WARN) when they change, not at every reconcile.
func (c *Controller) logNotes(ctx context.Context, notes []plan.Note) {
	c.mu.Lock()
	same := slices.Equal(notes, c.notes)
	c.notes = notes
	c.mu.Unlock()
	if same {
		return
	}
	engine.LogNotes(ctx, c.log, notes)
}

// nodeChanged reports whether an update touches anything the planner reads; node status
// heartbeats do not. A new UID is another node of the same name (its creation time differs). All of status.nodeInfo counts, since an upgrade.when template may read any
// of it (a template reading other status fields is evaluated again at the next resync). Without
// a template the cached nodes are trimmed (Engine.TrimNode) to what the planner reads, so other
// owners' annotations and nodeInfo fields never differ.
func nodeChanged(o, n *corev1.Node) bool {
	return o.UID != n.UID || !equalMaps(o.Labels, n.Labels) || !equalMaps(o.Annotations, n.Annotations) ||
		!slices.EqualFunc(o.Spec.Taints, n.Spec.Taints, func(a, b corev1.Taint) bool { return a.MatchTaint(&b) && a.Value == b.Value }) ||
		o.Spec.Unschedulable != n.Spec.Unschedulable ||
		!equality.Semantic.DeepEqual(o.Status.NodeInfo, n.Status.NodeInfo) ||
		state.NodeReady(o) != state.NodeReady(n)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// stripManagedFields drops metadata.managedFields from cached objects: the planner never reads
// them, and on nodes they are a large share of the memory an informer holds.
func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

// trimMaintenance keeps of a cached nodeMaintenance object only what the sources read.
func (c *Controller) trimMaintenance(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return c.nm.TrimObject(u), nil
	}
	return obj, nil
}

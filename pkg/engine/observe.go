package engine

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
)

// Observation is one snapshot plus what was skipped while taking it.
type Observation struct {
	Snapshot plan.Snapshot
	Warnings []sources.Warning
}

// Observe takes one snapshot with a constant number of API calls: two node lists (pool, status
// label), one list per object source, one DaemonSet get and two namespaced lists (its revisions
// and pods). No per-node reads. The nodes, the maintenance objects and the warmer are read
// concurrently: the snapshot is no more atomic for being read in sequence, and at 5,000 nodes the
// node pages alone take a few hundred milliseconds. When reads fail, the error reported is the
// first in that order (nodes, maintenance, warmer), whichever failed first.
func (e *Engine) Observe(ctx context.Context) (Observation, error) {
	var (
		wg        sync.WaitGroup
		errs      [3]error
		nodes     []*corev1.Node
		objects   []*unstructured.Unstructured
		served    bool
		ds        *appsv1.DaemonSet
		revisions []*appsv1.ControllerRevision
		pods      []*corev1.Pod
	)
	wg.Go(func() { nodes, errs[0] = e.listNodes(ctx) })
	wg.Go(func() { objects, served, errs[1] = e.sources.List(ctx) })
	wg.Go(func() { ds, revisions, pods, errs[2] = e.observeWarmer(ctx) })
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return Observation{}, err
		}
	}
	src := e.sources.CollectFrom(nodes, objects, served)
	return Observation{
		Snapshot: plan.Snapshot{
			Nodes: nodes, Maintenance: src.Maintenance, Now: e.clock.Now(),
			DaemonSet: ds, Revisions: revisions, Pods: pods,
		},
		Warnings: src.Warnings,
	}, nil
}

// nodePageSize is the page size of node lists: a 5,000-node list in one response would need the
// whole response body and every decoded node in memory at once. At 5,000 nodes, pages of 250
// keep run --once's peak RSS about 6 MiB below pages of 500, for ten more list requests and no
// measurable difference in wall time.
const nodePageSize = 250

// listNodes lists pool nodes and nodes carrying the status label (a node that left the pool
// still has to be released), each once, sorted by name. Each list is paginated (one request per
// nodePageSize nodes) and each node is trimmed of what nothing reads as soon as its page is decoded.
func (e *Engine) listNodes(ctx context.Context) ([]*corev1.Node, error) {
	byName := map[string]*corev1.Node{}
	if err := e.listNodePages(ctx, e.cfg.PoolSelector().String(), byName); err != nil {
		return nil, fmt.Errorf("listing pool nodes (%s): %w", e.cfg.PoolSelector(), err)
	}
	req, err := labels.NewRequirement(e.cfg.StatusLabel.Key, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("status label %s: %w", e.cfg.StatusLabel.Key, err)
	}
	if err := e.listNodePages(ctx, labels.NewSelector().Add(*req).String(), byName); err != nil {
		return nil, fmt.Errorf("listing nodes labelled %s: %w", e.cfg.StatusLabel.Key, err)
	}
	nodes := make([]*corev1.Node, 0, len(byName))
	for _, n := range byName {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	return nodes, nil
}

func (e *Engine) listNodePages(ctx context.Context, selector string, into map[string]*corev1.Node) error {
	opts := metav1.ListOptions{LabelSelector: selector, Limit: nodePageSize}
	var read []string // the names this list added to into
	for {
		list, err := e.client.CoreV1().Nodes().List(ctx, opts)
		if apierrors.IsResourceExpired(err) && opts.Continue != "" {
			// The continue token expired (a very slow cycle): start over in one request,
			// forgetting what this list read (not what another list put into into).
			opts.Continue, opts.Limit = "", 0
			for _, name := range read {
				delete(into, name)
			}
			read = nil
			continue
		}
		if err != nil {
			return err
		}
		for i := range list.Items {
			n := &list.Items[i]
			e.TrimNode(n)
			if _, ok := into[n.Name]; !ok {
				read = append(read, n.Name)
			}
			into[n.Name] = n
		}
		if list.Continue == "" {
			return nil
		}
		opts.Continue = list.Continue
	}
}

// TrimNode drops what neither the planner nor the status command reads from a node, to keep a
// large pool's memory small: managed fields always; and, unless an upgrade.when template (which
// may read any field) is configured, images, volumes, capacity, addresses, conditions other than
// Ready and the like. Labels, annotations, taints, spec.unschedulable, the Ready condition and
// nodeInfo stay.
func (e *Engine) TrimNode(n *corev1.Node) {
	n.ManagedFields = nil
	if e.cfg.Upgrade.When != "" {
		return
	}
	st := &n.Status
	st.Images, st.VolumesInUse, st.VolumesAttached = nil, nil, nil
	st.Capacity, st.Allocatable, st.Addresses = nil, nil, nil
	st.Config, st.Features, st.RuntimeHandlers = nil, nil, nil
	st.DaemonEndpoints = corev1.NodeDaemonEndpoints{}
	// Only the Ready condition is read.
	var ready []corev1.NodeCondition
	for _, c := range st.Conditions {
		if c.Type == corev1.NodeReady {
			c.Message = ""
			ready = append(ready, c)
		}
	}
	st.Conditions = ready
}

// observeWarmer reads the warmer DaemonSet, its ControllerRevisions and its pods. A missing
// DaemonSet is not an error: nodes simply cannot become warm (and the planner says so).
func (e *Engine) observeWarmer(ctx context.Context) (*appsv1.DaemonSet, []*appsv1.ControllerRevision, []*corev1.Pod, error) {
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	ds, err := e.client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("getting warmer DaemonSet %s/%s: %w", ns, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("warmer DaemonSet %s/%s selector: %w", ns, name, err)
	}
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	revList, err := e.client.AppsV1().ControllerRevisions(ns).List(ctx, opts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing revisions of DaemonSet %s/%s: %w", ns, name, err)
	}
	podList, err := e.client.CoreV1().Pods(ns).List(ctx, opts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing pods of DaemonSet %s/%s: %w", ns, name, err)
	}
	revisions := make([]*appsv1.ControllerRevision, len(revList.Items))
	for i := range revList.Items {
		revisions[i] = &revList.Items[i]
	}
	pods := make([]*corev1.Pod, len(podList.Items))
	for i := range podList.Items {
		pods[i] = &podList.Items[i]
	}
	return ds, revisions, pods, nil
}

// Cached is what an informer-based observer holds: the objects Observe would list, read from
// caches instead. Revisions and Pods may include objects of other controllers; ObserveFrom keeps
// those the DaemonSet's selector matches, as Observe's label-selected lists do.
type Cached struct {
	// Nodes are the pool nodes and the nodes carrying the status label, each once.
	Nodes []*corev1.Node
	// Maintenance are the nodeMaintenance objects; MaintenanceServed is false when the resource
	// is not served (the source is then empty, with a warning).
	Maintenance       []*unstructured.Unstructured
	MaintenanceServed bool
	DaemonSet         *appsv1.DaemonSet
	Revisions         []*appsv1.ControllerRevision
	Pods              []*corev1.Pod
}

// ObserveFrom builds the Observation of one cycle from cached objects, with no API call, at the
// engine clock's now. The objects are read, never modified.
func (e *Engine) ObserveFrom(c Cached) (Observation, error) {
	nodes := slices.Clone(c.Nodes)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	src := e.sources.CollectFrom(nodes, c.Maintenance, c.MaintenanceServed)
	obs := Observation{
		Snapshot: plan.Snapshot{Nodes: nodes, Maintenance: src.Maintenance, Now: e.clock.Now()},
		Warnings: src.Warnings,
	}
	ds := c.DaemonSet
	if ds == nil {
		return obs, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return Observation{}, fmt.Errorf("warmer DaemonSet %s/%s selector: %w", ds.Namespace, ds.Name, err)
	}
	obs.Snapshot.DaemonSet = ds
	for _, r := range c.Revisions {
		if r.Namespace == ds.Namespace && sel.Matches(labels.Set(r.Labels)) {
			obs.Snapshot.Revisions = append(obs.Snapshot.Revisions, r)
		}
	}
	for _, p := range c.Pods {
		if p.Namespace == ds.Namespace && sel.Matches(labels.Set(p.Labels)) {
			obs.Snapshot.Pods = append(obs.Snapshot.Pods, p)
		}
	}
	return obs, nil
}

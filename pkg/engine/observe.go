package engine

import (
	"context"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// and pods). No per-node reads.
func (e *Engine) Observe(ctx context.Context) (Observation, error) {
	nodes, err := e.listNodes(ctx)
	if err != nil {
		return Observation{}, err
	}
	src, err := e.sources.Collect(ctx, nodes)
	if err != nil {
		return Observation{}, err
	}
	obs := Observation{
		Snapshot: plan.Snapshot{Nodes: nodes, Maintenance: src.Maintenance, Now: e.clock.Now()},
		Warnings: src.Warnings,
	}
	ds, revisions, pods, err := e.observeWarmer(ctx)
	if err != nil {
		return Observation{}, err
	}
	obs.Snapshot.DaemonSet, obs.Snapshot.Revisions, obs.Snapshot.Pods = ds, revisions, pods
	return obs, nil
}

// listNodes lists pool nodes and nodes carrying the status label (a node that left the pool
// still has to be released), each once, sorted by name.
func (e *Engine) listNodes(ctx context.Context) ([]*corev1.Node, error) {
	pool, err := e.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: e.cfg.PoolSelector().String()})
	if err != nil {
		return nil, fmt.Errorf("listing pool nodes (%s): %w", e.cfg.PoolSelector(), err)
	}
	req, err := labels.NewRequirement(e.cfg.StatusLabel.Key, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("status label %s: %w", e.cfg.StatusLabel.Key, err)
	}
	labelled, err := e.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: labels.NewSelector().Add(*req).String()})
	if err != nil {
		return nil, fmt.Errorf("listing nodes labelled %s: %w", e.cfg.StatusLabel.Key, err)
	}
	byName := make(map[string]*corev1.Node, len(pool.Items)+len(labelled.Items))
	for _, list := range [][]corev1.Node{pool.Items, labelled.Items} {
		for i := range list {
			byName[list[i].Name] = &list[i]
		}
	}
	nodes := make([]*corev1.Node, 0, len(byName))
	for _, n := range byName {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	return nodes, nil
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

package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// nodeRecord is what the orchestrator wrote on a node during the demo. The tainted-at annotation
// is removed at release, so it is kept here from when it was last seen.
type nodeRecord struct {
	Phase      string
	TaintedAt  time.Time
	ReleasedAt time.Time
	Reason     string
	LastError  string
}

// recorder watches the pool's nodes and keeps their records.
type recorder struct {
	mu    sync.Mutex
	nodes map[string]nodeRecord
}

func newRecorder() *recorder { return &recorder{nodes: map[string]nodeRecord{}} }

// Start watches the nodes matching selector until ctx ends; it returns once the first list is in.
func (r *recorder) Start(ctx context.Context, client kubernetes.Interface, selector labels.Selector) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector.String() }))
	inf := factory.Core().V1().Nodes().Informer()
	observe := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok {
			r.observe(n)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		return fmt.Errorf("watching pool nodes %s: %w", selector, err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("watching pool nodes %s: %w", selector, context.Cause(ctx))
	}
	return nil
}

func (r *recorder) observe(n *corev1.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.nodes[n.Name]
	rec.Phase = state.PhaseOf(n)
	if t, ok := state.Time(n, state.TaintedAt); ok {
		rec.TaintedAt = t
	}
	rec.ReleasedAt, _ = state.Time(n, state.ReleasedAt)
	rec.Reason = n.Annotations[state.ReleaseReason]
	rec.LastError = n.Annotations[state.LastError]
	r.nodes[n.Name] = rec
}

// Get returns the node's record.
func (r *recorder) Get(node string) nodeRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes[node]
}

// Package sources finds the nodes that are about to be upgraded: the maintenance set.
//
// Several sources may be enabled; the set is their union. nodeMaintenance reads objects with the
// dynamic client (one list call); nodeLabel and cordoned look at nodes already listed, so they cost
// no API call.
package sources

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

// Warning is an object a source skipped, or a source that could not be read but is not fatal.
type Warning struct {
	Source  string
	Object  string
	Message string
}

// Result is the maintenance set and what was skipped on the way.
type Result struct {
	Maintenance map[string][]plan.Maintenance
	Warnings    []Warning
}

// Collector gathers the enabled sources.
type Collector struct {
	cfg     *config.Config
	dynamic dynamic.Interface
	pool    labels.Selector
	label   labels.Selector
}

// NewCollector returns a collector for cfg. dyn may be nil when nodeMaintenance is disabled.
func NewCollector(cfg *config.Config, dyn dynamic.Interface) *Collector {
	return &Collector{cfg: cfg, dynamic: dyn, pool: cfg.PoolSelector(), label: cfg.NodeLabelSelector()}
}

// GVR returns the nodeMaintenance source's resource.
func GVR(cfg *config.Config) schema.GroupVersionResource {
	nm := cfg.Maintenance.NodeMaintenance
	return schema.GroupVersionResource{Group: nm.Group, Version: nm.Version, Resource: nm.Resource}
}

// Collect returns the maintenance set for the given nodes (the pool and status-labelled nodes
// already listed). Maintenance of nodes not among them is ignored: they are not ours.
func (c *Collector) Collect(ctx context.Context, nodes []*corev1.Node) (Result, error) {
	res := Result{Maintenance: map[string][]plan.Maintenance{}}
	known := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if !c.pool.Matches(labels.Set(n.Labels)) {
			continue
		}
		known[n.Name] = true
		if c.label != nil && c.label.Matches(labels.Set(n.Labels)) {
			res.add(n.Name, plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel})
		}
		if c.cfg.Maintenance.Cordoned.Enabled && n.Spec.Unschedulable {
			res.add(n.Name, plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned})
		}
	}
	if c.cfg.Maintenance.NodeMaintenance.Enabled {
		if err := c.collectObjects(ctx, known, &res); err != nil {
			return Result{}, err
		}
	}
	return res, nil
}

func (c *Collector) collectObjects(ctx context.Context, known map[string]bool, res *Result) error {
	gvr := GVR(c.cfg)
	nm := c.cfg.Maintenance.NodeMaintenance
	var ri dynamic.ResourceInterface = c.dynamic.Resource(gvr)
	if nm.Namespace != "" {
		ri = c.dynamic.Resource(gvr).Namespace(nm.Namespace)
	}
	list, err := ri.List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		res.Warnings = append(res.Warnings, Warning{Source: plan.SourceNodeMaintenance, Message: fmt.Sprintf(
			"resource %s is not served (is its CRD installed?); no %s maintenance is active. Disable maintenance.nodeMaintenance if it is not used",
			gvr.String(), gvr.Resource)})
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", gvr.String(), err)
	}
	path := strings.Split(nm.NodeNameField, ".")
	for i := range list.Items {
		obj := &list.Items[i]
		name := obj.GetName()
		if ns := obj.GetNamespace(); ns != "" {
			name = ns + "/" + name
		}
		nodeName, found, err := unstructured.NestedString(obj.Object, path...)
		switch {
		case err != nil:
			res.Warnings = append(res.Warnings, Warning{Source: plan.SourceNodeMaintenance, Object: name,
				Message: fmt.Sprintf("skipped: field %s is not a string: %v", nm.NodeNameField, err)})
			continue
		case !found || nodeName == "":
			res.Warnings = append(res.Warnings, Warning{Source: plan.SourceNodeMaintenance, Object: name,
				Message: fmt.Sprintf("skipped: no node name at %s", nm.NodeNameField)})
			continue
		case !known[nodeName]:
			// Another pool's node, or a node that does not exist: not ours either way.
			continue
		}
		if obj.GetDeletionTimestamp() != nil {
			// A maintenance being deleted is over: the pipeline has finished with the node.
			continue
		}
		res.add(nodeName, plan.Maintenance{Source: plan.SourceNodeMaintenance, ID: string(obj.GetUID()), Object: name})
	}
	return nil
}

func (r *Result) add(node string, m plan.Maintenance) {
	r.Maintenance[node] = append(r.Maintenance[node], m)
}

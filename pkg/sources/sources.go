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
	"time"

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

// NotServedConfirm is how long the nodeMaintenance resource must keep being answered as not served
// (404) before its source counts as empty where that would take nodes out of maintenance: an API
// server that restarts answers 404 for a while for custom resources it serves (kubernetes#115241).
const NotServedConfirm = 10 * time.Second

// ResourceName names the nodeMaintenance resource as kubectl does, fully qualified:
// <resource>.<version>.<group>, e.g. nodemaintenances.v1beta1.nodemaintenance.medik8s.io.
func ResourceName(cfg *config.Config) string {
	gvr := GVR(cfg)
	return gvr.Resource + "." + gvr.Version + "." + gvr.Group
}

// List reads the maintenance objects CollectFrom needs: the nodeMaintenance objects, when that
// source is enabled (served is false when the resource is not served). Nothing otherwise.
func (c *Collector) List(ctx context.Context) (objects []*unstructured.Unstructured, served bool, err error) {
	if !c.cfg.Maintenance.NodeMaintenance.Enabled {
		return nil, true, nil
	}
	return c.listObjects(ctx)
}

// CollectFrom returns the maintenance set for the given nodes (the pool and status-labelled nodes
// already listed) from nodeMaintenance objects already read (List, or an informer's cache in
// event-driven mode). Maintenance of nodes not among them is ignored: they are not ours. served
// says whether the resource is served at all; when it is not, the source is empty and a warning
// says why.
func (c *Collector) CollectFrom(nodes []*corev1.Node, objects []*unstructured.Unstructured, served bool) Result {
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
	if !c.cfg.Maintenance.NodeMaintenance.Enabled {
		return res
	}
	if !served {
		gvr := GVR(c.cfg)
		why := "is its CRD installed?"
		if ns := c.cfg.Maintenance.NodeMaintenance.Namespace; ns != "" {
			// The API server answers the same for a cluster-scoped resource read in a namespace.
			why = fmt.Sprintf("is its CRD installed, and is it namespaced? maintenance.nodeMaintenance.namespace is %q and must be empty for a cluster-scoped resource", ns)
		}
		res.Warnings = append(res.Warnings, Warning{Source: plan.SourceNodeMaintenance, Message: fmt.Sprintf(
			"resource %s is not served (%s); no %s maintenance is active. Disable maintenance.nodeMaintenance if it is not used",
			ResourceName(c.cfg), why, gvr.Resource)})
		return res
	}
	c.addObjects(known, objects, &res)
	return res
}

// DynamicClient returns the dynamic client the collector reads nodeMaintenance objects with.
func (c *Collector) DynamicClient() dynamic.Interface { return c.dynamic }

// Resource returns the client of the nodeMaintenance resource (namespaced when configured).
func (c *Collector) Resource() dynamic.ResourceInterface {
	gvr := GVR(c.cfg)
	if ns := c.cfg.Maintenance.NodeMaintenance.Namespace; ns != "" {
		return c.dynamic.Resource(gvr).Namespace(ns)
	}
	return c.dynamic.Resource(gvr)
}

// listObjects lists the nodeMaintenance objects; served is false when the API server does not
// serve the resource (its CRD is not installed), which is not an error.
func (c *Collector) listObjects(ctx context.Context) (objects []*unstructured.Unstructured, served bool, err error) {
	list, err := c.Resource().List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("listing %s: %w", ResourceName(c.cfg), err)
	}
	objects = make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		objects[i] = c.TrimObject(&list.Items[i])
	}
	return objects, true, nil
}

// TrimObject returns a copy of a nodeMaintenance object with only what CollectFrom reads: its
// apiVersion, kind, name, namespace, UID, resourceVersion, creation and deletion timestamps and the node name
// field (whatever its type, so that a wrong one is still reported). A few hundred bytes instead of
// the whole object with its managed fields, status and annotations, for every object of a large
// maintenance: the objects of a cycle, or of the event-driven mode's cache, stay in memory.
func (c *Collector) TrimObject(u *unstructured.Unstructured) *unstructured.Unstructured {
	meta := map[string]any{}
	if m, ok := u.Object["metadata"].(map[string]any); ok {
		for _, k := range []string{"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"} {
			if v, ok := m[k]; ok {
				meta[k] = v
			}
		}
	}
	out := &unstructured.Unstructured{Object: map[string]any{"metadata": meta}}
	for _, k := range []string{"apiVersion", "kind"} {
		if v, ok := u.Object[k]; ok {
			out.Object[k] = v
		}
	}
	// The node name field is copied as far as its path goes in the object: to the value, or to
	// the first step that is not an object (a list, a string). What is not a node name is kept as
	// an empty value of its type (placeholder), so that reading the name from the trimmed object
	// fails for the reason the whole one would and the warning names the type, without keeping
	// or printing a large value written by hand. Values are set without a deep copy: they are
	// only read, and the original object is dropped. The path may run through what is already
	// kept (metadata.name, metadata.labels.node), which it never replaces: a path that goes on
	// past a kept value (metadata.name.x) reads that value, as in the whole object.
	path := strings.Split(c.cfg.Maintenance.NodeMaintenance.NodeNameField, ".")
	src, dst := u.Object, out.Object
	for i, k := range path {
		v, ok := src[k]
		if !ok {
			break
		}
		next, isMap := v.(map[string]any)
		if kept, ok := dst[k]; ok {
			child, keptMap := kept.(map[string]any)
			if i == len(path)-1 || !isMap || !keptMap {
				break
			}
			src, dst = next, child
			continue
		}
		if i == len(path)-1 {
			if _, isString := v.(string); !isString {
				v = placeholder(v)
			}
			dst[k] = v
			break
		}
		if !isMap {
			dst[k] = placeholder(v)
			break
		}
		child, ok := dst[k].(map[string]any)
		if !ok {
			child = map[string]any{}
			dst[k] = child
		}
		src, dst = next, child
	}
	return out
}

// placeholder returns an empty value of v's type for the types that can be large (strings,
// lists, objects), and v itself otherwise (numbers, booleans, null).
func placeholder(v any) any {
	switch v.(type) {
	case string:
		return ""
	case []any:
		return []any{}
	case map[string]any:
		return map[string]any{}
	}
	return v
}

func (c *Collector) addObjects(known map[string]bool, objects []*unstructured.Unstructured, res *Result) {
	nm := c.cfg.Maintenance.NodeMaintenance
	path := strings.Split(nm.NodeNameField, ".")
	for _, obj := range objects {
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
		res.add(nodeName, plan.Maintenance{Source: plan.SourceNodeMaintenance, ID: string(obj.GetUID()), Object: name,
			Created: obj.GetCreationTimestamp().UTC()})
	}
}

func (r *Result) add(node string, m plan.Maintenance) {
	r.Maintenance[node] = append(r.Maintenance[node], m)
}

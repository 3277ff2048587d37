package framework

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The medik8s NodeMaintenance resource, the default maintenance source of the product.
const (
	NodeMaintenanceGroup    = "nodemaintenance.medik8s.io"
	NodeMaintenanceVersion  = "v1beta1"
	NodeMaintenanceResource = "nodemaintenances"
	NodeMaintenanceKind     = "NodeMaintenance"
)

// NodeMaintenanceGVR returns the group, version and resource of NodeMaintenance objects.
func NodeMaintenanceGVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: NodeMaintenanceGroup, Version: NodeMaintenanceVersion, Resource: NodeMaintenanceResource}
}

func crdGVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
}

// maintenanceCRD is a minimal CustomResourceDefinition for NodeMaintenance-like objects of gvr:
// of scope (Cluster or Namespaced), spec.nodeName and spec.reason strings, a free-form status
// subresource.
func maintenanceCRD(gvr schema.GroupVersionResource, kind, scope string) *unstructured.Unstructured {
	str := map[string]any{"type": "string"}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": gvr.Resource + "." + gvr.Group},
		"spec": map[string]any{
			"group": gvr.Group,
			"scope": scope,
			"names": map[string]any{
				"kind":     kind,
				"listKind": kind + "List",
				"plural":   gvr.Resource,
				"singular": strings.ToLower(kind),
			},
			"versions": []any{map[string]any{
				"name":         gvr.Version,
				"served":       true,
				"storage":      true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"apiVersion": str,
						"kind":       str,
						"metadata":   map[string]any{"type": "object"},
						"spec": map[string]any{
							"type":       "object",
							"required":   []any{"nodeName"},
							"properties": map[string]any{"nodeName": str, "reason": str},
						},
						"status": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
					},
				}},
			}},
		},
	}}
}

// InstallNodeMaintenanceCRD installs the NodeMaintenance CRD (if it is not there yet) and waits
// until it is established and its resource is served.
func (c *Cluster) InstallNodeMaintenanceCRD(ctx context.Context) error {
	return c.InstallMaintenanceCRD(ctx, NodeMaintenanceGVR(), NodeMaintenanceKind)
}

// InstallMaintenanceCRD installs a CRD for NodeMaintenance-like objects of gvr and kind (if it is
// not there yet) and waits until it is established and its resource is served. Tests that delete
// their maintenance resource install one of their own, leaving NodeMaintenance to the others.
func (c *Cluster) InstallMaintenanceCRD(ctx context.Context, gvr schema.GroupVersionResource, kind string) error {
	return c.installCRD(ctx, gvr, maintenanceCRD(gvr, kind, "Cluster"))
}

// InstallNamespacedMaintenanceCRD is InstallMaintenanceCRD for a namespaced resource.
func (c *Cluster) InstallNamespacedMaintenanceCRD(ctx context.Context, gvr schema.GroupVersionResource, kind string) error {
	return c.installCRD(ctx, gvr, maintenanceCRD(gvr, kind, "Namespaced"))
}

func (c *Cluster) installCRD(ctx context.Context, gvr schema.GroupVersionResource, crd *unstructured.Unstructured) error {
	crds := c.Dynamic.Resource(crdGVR())
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating CRD %s: %w", crd.GetName(), err)
	}
	err := Eventually(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		got, err := crds.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conditions, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		established := false
		for _, cond := range conditions {
			if m, ok := cond.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				established = true
			}
		}
		if !established {
			return false, nil
		}
		_, err = c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if apierrors.IsNotFound(err) {
			return false, nil // served a moment after it is established
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for CRD %s to be established: %w", crd.GetName(), err)
	}
	return nil
}

// DeleteMaintenanceCRD deletes the CRD of gvr (which deletes its objects) and waits until the
// resource is no longer served.
func (c *Cluster) DeleteMaintenanceCRD(ctx context.Context, gvr schema.GroupVersionResource) error {
	name := gvr.Resource + "." + gvr.Group
	err := c.Dynamic.Resource(crdGVR()).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting CRD %s: %w", name, err)
	}
	err = Eventually(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for CRD %s to be gone: %w", name, err)
	}
	return nil
}

// CreateNodeMaintenance creates a NodeMaintenance named name for node nodeName (spec.reason
// "e2e") and returns it (its UID is the maintenance's identity).
func (c *Cluster) CreateNodeMaintenance(ctx context.Context, name, nodeName string) (*unstructured.Unstructured, error) {
	return c.CreateMaintenance(ctx, NodeMaintenanceGVR(), NodeMaintenanceKind, name, nodeName)
}

// CreateMaintenance creates an object of gvr and kind (a resource InstallMaintenanceCRD
// installed) named name for node nodeName (spec.reason "e2e") and returns it.
func (c *Cluster) CreateMaintenance(ctx context.Context, gvr schema.GroupVersionResource, kind, name, nodeName string) (*unstructured.Unstructured, error) {
	nm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"nodeName": nodeName, "reason": "e2e"},
	}}
	created, err := c.Dynamic.Resource(gvr).Create(ctx, nm, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating %s %s for node %s: %w", kind, name, nodeName, err)
	}
	return created, nil
}

// DeleteNodeMaintenance deletes a NodeMaintenance; one that is already gone is not an error.
func (c *Cluster) DeleteNodeMaintenance(ctx context.Context, name string) error {
	err := c.Dynamic.Resource(NodeMaintenanceGVR()).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting NodeMaintenance %s: %w", name, err)
	}
	return nil
}

package framework

import (
	"context"
	"fmt"
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

// nodeMaintenanceCRD is a minimal CustomResourceDefinition for nodemaintenances.nodemaintenance.medik8s.io:
// cluster-scoped, v1beta1, spec.nodeName and spec.reason strings, a free-form status subresource.
func nodeMaintenanceCRD() *unstructured.Unstructured {
	str := map[string]any{"type": "string"}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": NodeMaintenanceResource + "." + NodeMaintenanceGroup},
		"spec": map[string]any{
			"group": NodeMaintenanceGroup,
			"scope": "Cluster",
			"names": map[string]any{
				"kind":       NodeMaintenanceKind,
				"listKind":   NodeMaintenanceKind + "List",
				"plural":     NodeMaintenanceResource,
				"singular":   "nodemaintenance",
				"shortNames": []any{"nm"},
			},
			"versions": []any{map[string]any{
				"name":         NodeMaintenanceVersion,
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
	crd := nodeMaintenanceCRD()
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
		_, err = c.Dynamic.Resource(NodeMaintenanceGVR()).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for CRD %s to be established: %w", crd.GetName(), err)
	}
	return nil
}

// CreateNodeMaintenance creates a NodeMaintenance named name for node nodeName (spec.reason
// "e2e") and returns it (its UID is the maintenance's identity).
func (c *Cluster) CreateNodeMaintenance(ctx context.Context, name, nodeName string) (*unstructured.Unstructured, error) {
	nm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": NodeMaintenanceGroup + "/" + NodeMaintenanceVersion,
		"kind":       NodeMaintenanceKind,
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"nodeName": nodeName, "reason": "e2e"},
	}}
	created, err := c.Dynamic.Resource(NodeMaintenanceGVR()).Create(ctx, nm, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating NodeMaintenance %s for node %s: %w", name, nodeName, err)
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

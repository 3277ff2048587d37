package sources_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Reading real objects through a real API server is covered by test/e2e; these tests cover the
// odd objects a real cluster may hold.

func nodeMaintenance(name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nodemaintenance.medik8s.io/v1beta1",
		"kind":       "NodeMaintenance",
		"metadata":   map[string]any{"name": name, "uid": "uid-" + name},
		"spec":       spec,
	}}
	return u
}

func collector(t testing.TB, mutate func(*config.Config), objs ...runtime.Object) (*sources.Collector, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	cfg := config.Default()
	cfg.Instance = "prewarm/test"
	cfg.Pool.NodeSelector = map[string]string{"pool": "nb"}
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(t, cfg.Validate())
	gvr := sources.GVR(cfg)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"}, objs...)
	return sources.NewCollector(cfg, dyn), dyn
}

func TestNodeMaintenanceObjects(t *testing.T) {
	ok := nodeMaintenance("ok", map[string]any{"nodeName": "a"})
	created := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ok.SetCreationTimestamp(metav1.NewTime(created))
	c, _ := collector(t, nil, ok,
		nodeMaintenance("no-name", map[string]any{"reason": "x"}),
		nodeMaintenance("not-a-string", map[string]any{"nodeName": int64(42)}),
		nodeMaintenance("other-pool", map[string]any{"nodeName": "z"}),
	)
	nodes := []*corev1.Node{tu.Node("a", tu.WithLabels("pool", "nb")), tu.Node("z", tu.WithLabels("pool", "other"))}
	res, err := collect(c, nodes)
	require.NoError(t, err)
	assert.Equal(t, map[string][]plan.Maintenance{
		"a": {{Source: plan.SourceNodeMaintenance, ID: "uid-ok", Object: "ok", Created: created}},
	}, res.Maintenance)
	require.Len(t, res.Warnings, 2)
	byObject := map[string]string{}
	for _, w := range res.Warnings {
		byObject[w.Object] = w.Message
	}
	assert.Contains(t, byObject["no-name"], "no node name at spec.nodeName")
	assert.Contains(t, byObject["not-a-string"], "not a string")
}

func TestCustomFieldPath(t *testing.T) {
	c, _ := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.NodeNameField = "spec.target.node" },
		nodeMaintenance("m", map[string]any{"target": map[string]any{"node": "a"}}))
	res, err := collect(c, []*corev1.Node{tu.Node("a", tu.WithLabels("pool", "nb"))})
	require.NoError(t, err)
	assert.Len(t, res.Maintenance["a"], 1)
}

func TestResourceNotServedIsAWarning(t *testing.T) {
	c, dyn := collector(t, nil)
	dyn.PrependReactor("list", "nodemaintenances", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "nodemaintenance.medik8s.io", Resource: "nodemaintenances"}, "")
	})
	res, err := collect(c, []*corev1.Node{tu.Node("a", tu.WithLabels("pool", "nb"))})
	require.NoError(t, err)
	assert.Empty(t, res.Maintenance)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0].Message, "is not served")
}

// The API server answers 404 also when a namespace is configured for a cluster-scoped resource
// (medik8s NodeMaintenance is one): "is its CRD installed?" alone sends the operator the wrong way.
func TestNotServedInANamespaceSaysSo(t *testing.T) {
	c, dyn := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.Namespace = "upgrades" })
	dyn.PrependReactor("list", "nodemaintenances", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "nodemaintenance.medik8s.io", Resource: "nodemaintenances"}, "")
	})
	res, err := collect(c, []*corev1.Node{tu.Node("a", tu.WithLabels("pool", "nb"))})
	require.NoError(t, err)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0].Message, "maintenance.nodeMaintenance.namespace")
	assert.Contains(t, res.Warnings[0].Message, "cluster-scoped")
}

func TestListErrorFailsTheCycle(t *testing.T) {
	c, dyn := collector(t, nil)
	dyn.PrependReactor("list", "nodemaintenances", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodemaintenances"}, "", nil)
	})
	_, err := collect(c, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "listing nodemaintenances.v1beta1.nodemaintenance.medik8s.io")
}

func TestLabelAndCordonSources(t *testing.T) {
	c, _ := collector(t, func(cfg *config.Config) {
		cfg.Maintenance.NodeMaintenance.Enabled = false
		cfg.Maintenance.Cordoned.Enabled = true
		cfg.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade=pending"}
	})
	nodes := []*corev1.Node{
		tu.Node("cordoned", tu.WithLabels("pool", "nb"), tu.Cordoned()),
		tu.Node("labelled", tu.WithLabels("pool", "nb", "upgrade", "pending")),
		tu.Node("both", tu.WithLabels("pool", "nb", "upgrade", "pending"), tu.Cordoned()),
		tu.Node("idle", tu.WithLabels("pool", "nb")),
		tu.Node("outside", tu.WithLabels("upgrade", "pending"), tu.Cordoned()),
	}
	res, err := collect(c, nodes)
	require.NoError(t, err)
	cordon := plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned}
	label := plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel}
	assert.Equal(t, map[string][]plan.Maintenance{
		"cordoned": {cordon},
		"labelled": {label},
		"both":     {label, cordon},
	}, res.Maintenance)
}

// collect reads the maintenance objects and builds the maintenance set, as a one-shot cycle does.
func collect(c *sources.Collector, nodes []*corev1.Node) (sources.Result, error) {
	objects, served, err := c.List(context.Background())
	if err != nil {
		return sources.Result{}, err
	}
	return c.CollectFrom(nodes, objects, served), nil
}

// A listed object keeps only what the maintenance set is built from; the node name field keeps
// its value whatever its type, so that a wrong one is still reported.
func TestTrimObject(t *testing.T) {
	c, _ := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.NodeNameField = "spec.target.node" })
	full := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Upgrade",
		"metadata": map[string]any{
			"name": "m", "namespace": "ops", "uid": "uid-m", "resourceVersion": "7", "generation": int64(3),
			"creationTimestamp": "2026-11-25T11:00:00Z",
			"deletionTimestamp": "2026-11-25T12:00:00Z", "finalizers": []any{"example.com/drain"},
			"annotations":   map[string]any{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			"managedFields": []any{map[string]any{"manager": "kubectl"}},
		},
		"spec":   map[string]any{"reason": "kernel", "target": map[string]any{"node": "a", "pool": "nb"}},
		"status": map[string]any{"phase": "Running", "drainProgress": int64(100)},
	}}
	got := c.TrimObject(full)
	assert.Equal(t, map[string]any{
		"apiVersion": "example.com/v1", "kind": "Upgrade",
		"metadata": map[string]any{
			"name": "m", "namespace": "ops", "uid": "uid-m", "resourceVersion": "7",
			"creationTimestamp": "2026-11-25T11:00:00Z", "deletionTimestamp": "2026-11-25T12:00:00Z",
		},
		"spec": map[string]any{"target": map[string]any{"node": "a"}},
	}, got.Object)
	assert.NotNil(t, got.GetDeletionTimestamp())

	full.Object["spec"] = map[string]any{"target": map[string]any{"node": int64(42)}}
	assert.Equal(t, map[string]any{"target": map[string]any{"node": int64(42)}}, c.TrimObject(full).Object["spec"])
	delete(full.Object, "spec")
	assert.NotContains(t, c.TrimObject(full).Object, "spec", "no node name field: none made up")

	// A step of the path that is not an object (a list of targets, a plain value) is kept as an
	// empty value of its type, so that the name is refused for its type, as the whole object's
	// would be.
	full.Object["spec"] = map[string]any{"target": []any{map[string]any{"node": "a"}}, "reason": "kernel"}
	assert.Equal(t, map[string]any{"target": []any{}}, c.TrimObject(full).Object["spec"])
	full.Object["spec"] = map[string]any{"target": "a"}
	assert.Equal(t, map[string]any{"target": ""}, c.TrimObject(full).Object["spec"])
}

// The warning for an object whose node name field runs through a list says so, from the cached
// (trimmed) object as from the whole one.
func TestNodeNameThroughAListIsReportedForItsType(t *testing.T) {
	c, _ := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.NodeNameField = "spec.nodes.0" })
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Upgrade",
		"metadata": map[string]any{"name": "m", "uid": "uid-m"},
		"spec":     map[string]any{"nodes": []any{"a"}},
	}}
	node := tu.Node("a", tu.WithLabels("pool", "nb"))
	for name, o := range map[string]*unstructured.Unstructured{"whole": obj, "trimmed": c.TrimObject(obj)} {
		res := c.CollectFrom([]*corev1.Node{node}, []*unstructured.Unstructured{o}, true)
		require.Len(t, res.Warnings, 1, name)
		assert.Contains(t, res.Warnings[0].Message, "skipped: field spec.nodes.0 is not a string", name)
		assert.Contains(t, res.Warnings[0].Message, "[]interface {}", name)
		assert.Empty(t, res.Maintenance, name)
	}
}

// A node name field inside metadata (any resource that names its node there) is kept along with
// the rest of metadata; an object without metadata does not stop the collection.
func TestTrimObjectNodeNameInMetadata(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Drain",
		"metadata": map[string]any{
			"name": "a", "namespace": "ops", "uid": "uid-a", "deletionTimestamp": "2026-11-25T12:00:00Z",
			"labels": map[string]any{"node": "b", "team": "x"},
		},
	}}
	for field, want := range map[string]map[string]any{
		"metadata.name":        {"name": "a", "namespace": "ops", "uid": "uid-a", "deletionTimestamp": "2026-11-25T12:00:00Z"},
		"metadata.labels.node": {"name": "a", "namespace": "ops", "uid": "uid-a", "deletionTimestamp": "2026-11-25T12:00:00Z", "labels": map[string]any{"node": "b"}},
	} {
		c, _ := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.NodeNameField = field })
		assert.Equal(t, want, c.TrimObject(obj).Object["metadata"], field)
	}
	c, _ := collector(t, nil)
	assert.Equal(t, map[string]any{}, c.TrimObject(&unstructured.Unstructured{Object: map[string]any{"kind": "Drain"}}).Object["metadata"])
}

// A node name field whose path goes on past what metadata keeps (a name, a UID) or stops at
// metadata itself is refused with the same warning, naming the object, from the trimmed object
// as from the whole one: the trimming never replaces what it kept.
func TestNodeNameThroughKeptMetadata(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Drain",
		"metadata": map[string]any{"name": "m", "namespace": "ops", "uid": "uid-m"},
	}}
	node := tu.Node("a", tu.WithLabels("pool", "nb"))
	for _, field := range []string{"metadata.name.x", "metadata.uid.x", "metadata"} {
		c, _ := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.NodeNameField = field })
		trimmed := c.TrimObject(obj)
		assert.Equal(t, map[string]any{"name": "m", "namespace": "ops", "uid": "uid-m"}, trimmed.Object["metadata"], field)
		whole := c.CollectFrom([]*corev1.Node{node}, []*unstructured.Unstructured{obj}, true)
		require.Len(t, whole.Warnings, 1, field)
		assert.Contains(t, whole.Warnings[0].Object, "m", field)
		assert.Equal(t, whole.Warnings, c.CollectFrom([]*corev1.Node{node}, []*unstructured.Unstructured{trimmed}, true).Warnings, field)
	}
}

// A large value where the node name should be (a list or an object written by hand into a
// resource without a schema) is neither kept in the trimmed object nor printed in the warning:
// its type says enough.
func TestLargeValueAtTheNodeNameIsNotKept(t *testing.T) {
	big := make([]any, 10000)
	for i := range big {
		big[i] = strings.Repeat("x", 100)
	}
	node := tu.Node("a", tu.WithLabels("pool", "nb"))
	for field, spec := range map[string]map[string]any{
		"spec.nodeName":   {"nodeName": big},
		"spec.node.name":  {"node": big},
		"spec.nodes.name": {"nodes": map[string]any{"name": map[string]any{"list": big}}},
	} {
		c, _ := collector(t, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.NodeNameField = field })
		obj := c.TrimObject(&unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.com/v1", "kind": "Upgrade",
			"metadata": map[string]any{"name": "m", "uid": "uid-m"},
			"spec":     spec,
		}})
		b, err := json.Marshal(obj.Object)
		require.NoError(t, err)
		assert.Less(t, len(b), 300, "%s: %s", field, b)
		res := c.CollectFrom([]*corev1.Node{node}, []*unstructured.Unstructured{obj}, true)
		require.Len(t, res.Warnings, 1, field)
		assert.Contains(t, res.Warnings[0].Message, "skipped: field "+field+" is not a string", field)
		assert.Less(t, len(res.Warnings[0].Message), 300, field)
	}
}

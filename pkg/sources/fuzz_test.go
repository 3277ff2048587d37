package sources_test

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Whatever shape a maintenance object has (a CRD of another version, a field of another type, a
// metadata block edited by hand), reading it never panics: it names a pool node's maintenance,
// or is skipped, and its trimmed copy (what the event-driven mode caches) reads the same.
func FuzzCollectOddObjects(f *testing.F) {
	f.Add(`{"metadata":{"name":"nm","uid":"u","creationTimestamp":"2026-11-25T12:00:00Z"},"spec":{"nodeName":"a"}}`)
	f.Add(`{"metadata":{"name":"nm","namespace":"ns","deletionTimestamp":"2026-11-25T12:00:00Z"},"spec":{"nodeName":"a"}}`)
	f.Add(`{"metadata":{"name":5,"uid":[],"creationTimestamp":"yesterday"},"spec":{"nodeName":{"a":1}}}`)
	f.Add(`{"metadata":null,"spec":"a"}`)
	f.Add(`{"spec":{"nodeName":["a"]},"status":{"phase":"Running"}}`)
	// The default node name field, and one in the metadata (which TrimObject keeps whole).
	byName, _ := collector(f, func(c *config.Config) { c.Maintenance.NodeMaintenance.NodeNameField = "metadata.name" })
	bySpec, _ := collector(f, nil)
	nodes := []*corev1.Node{tu.Node("a", tu.WithLabels("pool", "nb")), tu.Node("other")}
	f.Fuzz(func(t *testing.T, doc string) {
		var obj map[string]any
		if json.Unmarshal([]byte(doc), &obj) != nil || obj == nil {
			return
		}
		for _, c := range []*sources.Collector{bySpec, byName} {
			collectAlike(t, c, nodes, obj)
		}
	})
}

// collectAlike checks one object read by c: only pool nodes named, and its trimmed copy read as
// the whole one (the same maintenance, as many warnings).
func collectAlike(t *testing.T, c *sources.Collector, nodes []*corev1.Node, obj map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	trimmed := c.TrimObject(u)
	whole := c.CollectFrom(nodes, []*unstructured.Unstructured{u}, true)
	short := c.CollectFrom(nodes, []*unstructured.Unstructured{trimmed}, true)
	for node, ms := range whole.Maintenance {
		if node != "a" {
			t.Fatalf("maintenance for %q, not a pool node: %+v", node, ms)
		}
		for _, m := range ms {
			if m.Source != plan.SourceNodeMaintenance {
				t.Fatalf("source %q", m.Source)
			}
		}
	}
	if len(whole.Maintenance) != len(short.Maintenance) || len(whole.Warnings) != len(short.Warnings) {
		t.Fatalf("the trimmed copy reads otherwise: %+v against %+v", short, whole)
	}
	for node, ms := range whole.Maintenance {
		if len(short.Maintenance[node]) != len(ms) || short.Maintenance[node][0] != ms[0] {
			t.Fatalf("the trimmed copy reads otherwise: %+v against %+v", short.Maintenance, whole.Maintenance)
		}
	}
}

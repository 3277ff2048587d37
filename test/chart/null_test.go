package chart_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// A value set to null removes the chart's default (Helm's rule): either the chart then uses the
// empty value, or the schema refuses the install naming the missing property. A template never
// fails on it with Go's "invalid value; expected string" instead of a message about the value.
func TestNullValueIsEmptyOrRefusedByName(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	defaults := map[string]any{}
	require.NoError(t, yaml.Unmarshal(data, &defaults))
	var paths [][]string
	leafPaths(nil, defaults, &paths)
	slices.SortFunc(paths, func(a, b []string) int { return strings.Compare(strings.Join(a, "."), strings.Join(b, ".")) })
	require.Greater(t, len(paths), 50, "every scalar and list of values.yaml")

	for _, p := range paths {
		_, err := render(t, withPath(minimal(t), p, nil))
		if err != nil {
			assert.Contains(t, err.Error(), "missing property '"+p[len(p)-1]+"'", "%s: null", strings.Join(p, "."))
		}
	}

	enabled := withPath(minimal(t, "maintenance: {nodeLabel: {enabled: true}}"), []string{"maintenance", "nodeLabel", "selector"}, nil)
	_, err = render(t, enabled)
	require.ErrorContains(t, err, "maintenance.nodeLabel.selector is required when maintenance.nodeLabel.enabled is true")
}

// leafPaths appends the paths of the values that are not maps (scalars and lists) under v.
func leafPaths(prefix []string, v any, out *[][]string) {
	m, ok := v.(map[string]any)
	if !ok {
		*out = append(*out, prefix)
		return
	}
	for k, c := range m {
		leafPaths(append(slices.Clone(prefix), k), c, out)
	}
}

// withPath sets the value at path in vals, creating the maps on the way.
func withPath(vals map[string]any, path []string, v any) map[string]any {
	if len(path) == 1 {
		vals[path[0]] = v
		return vals
	}
	child, _ := vals[path[0]].(map[string]any)
	if child == nil {
		child = map[string]any{}
	}
	vals[path[0]] = withPath(child, path[1:], v)
	return vals
}

// `helm upgrade --reuse-values` from a chart without securityContext renders with the values of
// the old release, which lack the key: the pods still run as the image's nonroot user, not as
// whatever user a warmer image defaults to (root would then be refused by runAsNonRoot).
func TestReusedValuesWithoutSecurityContext(t *testing.T) {
	old := loadChart(t)
	delete(old.Values, "securityContext")
	r, err := render(t, minimal(t), renderOpts{chart: old})
	require.NoError(t, err)
	ds := warmer(t, r)
	pods := orchestratorPods(t, r)
	pods["daemonset/"+ds.Name] = ds.Spec.Template.Spec
	for name, spec := range pods {
		require.NotNil(t, spec.SecurityContext, name)
		assert.Equal(t, ptrTo(int64(65532)), spec.SecurityContext.RunAsUser, name)
		assert.Equal(t, ptrTo(int64(65532)), spec.SecurityContext.RunAsGroup, name)
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			require.NotNil(t, c.SecurityContext, "%s/%s", name, c.Name)
			assert.Equal(t, ptrTo(int64(65532)), c.SecurityContext.RunAsUser, "%s/%s", name, c.Name)
		}
	}
}

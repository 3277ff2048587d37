// Package chart_test renders charts/image-prewarmer through the Helm SDK (the same code path as
// `helm install --dry-run`: values schema, templates, hooks, NOTES) and checks the objects it produces.
package chart_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
)

const (
	chartDir    = "../../charts/image-prewarmer"
	examplesDir = "../../values-examples"
	releaseName = "prewarm"
	releaseNS   = "prewarm-system"
	// defaultKube is the version the local cluster runs.
	defaultKube = "v1.36.3"
)

// strictDecoder refuses unknown fields, so a misspelt field in a template fails the tests.
var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	require.NoError(t, err)
	return c
}

// rendered is one release rendered client-side.
type rendered struct {
	Notes   string
	Objects []runtime.Object // manifests and hooks, in that order
	Hooks   map[string][]string
}

type renderOpts struct {
	kubeVersion string
	chart       *chart.Chart // default: the chart loaded from chartDir
	releaseName string       // default: releaseName
	namespace   string       // default: releaseNS
}

// render installs the chart with DryRun+ClientOnly, like `helm install --dry-run` without a cluster.
func render(t *testing.T, vals map[string]any, opts ...renderOpts) (*rendered, error) {
	t.Helper()
	o := renderOpts{kubeVersion: defaultKube}
	if len(opts) > 0 {
		o = opts[0]
		if o.kubeVersion == "" {
			o.kubeVersion = defaultKube
		}
	}
	if o.chart == nil {
		o.chart = loadChart(t)
	}
	if o.releaseName == "" {
		o.releaseName = releaseName
	}
	if o.namespace == "" {
		o.namespace = releaseNS
	}
	kv, err := chartutil.ParseKubeVersion(o.kubeVersion)
	require.NoError(t, err)

	install := action.NewInstall(&action.Configuration{})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = o.releaseName
	install.Namespace = o.namespace
	install.KubeVersion = kv
	rel, err := install.Run(o.chart, vals)
	if err != nil {
		return nil, err
	}
	out := &rendered{Notes: rel.Info.Notes, Hooks: map[string][]string{}}
	for _, m := range releaseutil.SplitManifests(rel.Manifest) {
		out.Objects = append(out.Objects, decode(t, m))
	}
	for _, h := range rel.Hooks {
		obj := decode(t, h.Manifest)
		out.Objects = append(out.Objects, obj)
		for _, e := range h.Events {
			out.Hooks[h.Name] = append(out.Hooks[h.Name], string(e))
		}
	}
	return out, nil
}

func mustRender(t *testing.T, vals map[string]any, opts ...renderOpts) *rendered {
	t.Helper()
	r, err := render(t, vals, opts...)
	require.NoError(t, err)
	return r
}

func decode(t *testing.T, manifest string) runtime.Object {
	t.Helper()
	obj, _, err := strictDecoder.Decode([]byte(manifest), nil, nil)
	if runtime.IsNotRegisteredError(err) {
		// A kind client-go does not know (the Prometheus Operator's ServiceMonitor).
		u := &unstructured.Unstructured{}
		require.NoError(t, yaml.Unmarshal([]byte(manifest), &u.Object), "decoding manifest:\n%s", manifest)
		return u
	}
	require.NoError(t, err, "decoding manifest:\n%s", manifest)
	return obj
}

// values parses YAML into chart values.
func values(t *testing.T, y string) map[string]any {
	t.Helper()
	v := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte(y), &v))
	return v
}

// minimal is the smallest valid set of values: the pool is required.
func minimal(t *testing.T, extra ...string) map[string]any {
	t.Helper()
	base := values(t, "pool:\n  nodeSelector:\n    pool: notebooks\nimages: [registry.example.com/a:1, registry.example.com/b:2]\n")
	for _, e := range extra {
		base = chartutil.CoalesceTables(values(t, e), base)
	}
	return base
}

func valuesFile(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return values(t, string(data))
}

// find returns the one object of type T whose name has the given suffix ("" for any).
func find[T runtime.Object](t *testing.T, r *rendered, nameSuffix string) T {
	t.Helper()
	var found []T
	for _, o := range r.Objects {
		if typed, ok := o.(T); ok {
			if nameSuffix == "" || strings.HasSuffix(objName(o), nameSuffix) {
				found = append(found, typed)
			}
		}
	}
	var zero T
	require.Len(t, found, 1, "want exactly one %T named *%s", zero, nameSuffix)
	return found[0]
}

func all[T runtime.Object](r *rendered) []T {
	var out []T
	for _, o := range r.Objects {
		if typed, ok := o.(T); ok {
			out = append(out, typed)
		}
	}
	return out
}

func objName(o runtime.Object) string {
	switch v := o.(type) {
	case *appsv1.DaemonSet:
		return v.Name
	case *batchv1.CronJob:
		return v.Name
	case *batchv1.Job:
		return v.Name
	case *corev1.ConfigMap:
		return v.Name
	case *corev1.ServiceAccount:
		return v.Name
	case *rbacv1.ClusterRole:
		return v.Name
	case *rbacv1.ClusterRoleBinding:
		return v.Name
	case *rbacv1.Role:
		return v.Name
	case *rbacv1.RoleBinding:
		return v.Name
	case *appsv1.Deployment:
		return v.Name
	case *corev1.Service:
		return v.Name
	case *policyv1.PodDisruptionBudget:
		return v.Name
	case *unstructured.Unstructured:
		return v.GetName()
	}
	return fmt.Sprintf("%T", o)
}

func warmer(t *testing.T, r *rendered) *appsv1.DaemonSet {
	return find[*appsv1.DaemonSet](t, r, "-warmer")
}

// parsedConfig returns the ConfigMap's config.yaml decoded and validated by the orchestrator's own parser.
func parsedConfig(t *testing.T, r *rendered) *config.Config {
	t.Helper()
	cm := find[*corev1.ConfigMap](t, r, "")
	data, ok := cm.Data["config.yaml"]
	require.True(t, ok, "ConfigMap has no config.yaml")
	cfg, err := config.Parse([]byte(data))
	require.NoError(t, err, "config.yaml:\n%s", data)
	return cfg
}

// orchestratorPods returns the pod templates that run the orchestrator, by name.
func orchestratorPods(t *testing.T, r *rendered) map[string]corev1.PodSpec {
	t.Helper()
	pods := map[string]corev1.PodSpec{}
	for _, cj := range all[*batchv1.CronJob](r) {
		pods["cronjob/"+cj.Name] = cj.Spec.JobTemplate.Spec.Template.Spec
	}
	for _, d := range all[*appsv1.Deployment](r) {
		pods["deployment/"+d.Name] = d.Spec.Template.Spec
	}
	for _, j := range all[*batchv1.Job](r) {
		pods["job/"+j.Name] = j.Spec.Template.Spec
	}
	require.NotEmpty(t, pods)
	return pods
}

// exampleFiles lists values-examples/*.yaml and the chart's ci/*-values.yaml.
func exampleFiles(t *testing.T) []string {
	t.Helper()
	ex, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	require.NoError(t, err)
	ci, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	require.NoError(t, err)
	files := append(ex, ci...)
	sort.Strings(files)
	return files
}

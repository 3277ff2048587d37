package chart_test

// Object names, labels and namespaces for every name Helm and Kubernetes accept.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Helm accepts release names that start with a digit or hold dots (a DNS-1123 subdomain of at most
// 53 characters); the metrics Service's name is still a DNS-1035 label, as a Service name must be.
func TestMetricsServiceNameIsDNS1035ForEveryReleaseName(t *testing.T) {
	for _, name := range []string{"2024-prewarm", "prewarm.v2"} {
		t.Run(name, func(t *testing.T) {
			r, err := render(t, minimal(t, "orchestrator: {mode: deployment}"), renderOpts{releaseName: name})
			require.NoError(t, err)
			require.NotEmpty(t, all[*corev1.Service](r), "the metrics Service")
			for _, svc := range all[*corev1.Service](r) {
				assert.Empty(t, validation.IsDNS1035Label(svc.Name), "Service %s", svc.Name)
			}
		})
	}
}

// yamlScalarNames are names Helm accepts for a release and Kubernetes for a namespace (DNS-1123
// labels) that YAML 1.1, which sigs.k8s.io/yaml follows when Helm and the API server read a
// manifest, reads unquoted as a boolean, a number or null: written unquoted into a label, a name or a
// namespace, the install fails (json: cannot unmarshal bool into ... of type string), or null
// becomes an empty string.
var yamlScalarNames = []string{"n", "y", "no", "yes", "on", "off", "true", "false", "null", "123", "010", "0x1f", "1e3"}

// everyOptionalObject renders every kind of object the chart can, in each mode: the FlowSchema, the
// maintenance Role in a namespace, the ServiceMonitor, the PrometheusRule, the PodDisruptionBudget.
var everyOptionalObject = map[string]string{
	"cronjob": "{orchestrator: {flowSchema: {enabled: true}, cronJob: {pushgateway: 'http://pushgateway:9091'}, metrics: {prometheusRule: {enabled: true}}}, " +
		"maintenance: {nodeMaintenance: {namespace: ops}}}",
	"deployment": "{orchestrator: {mode: deployment, flowSchema: {enabled: true}, metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}}}, " +
		"maintenance: {nodeMaintenance: {namespace: ops}}}",
}

// fieldValues returns every value of a field named key in the object, at any depth, by path.
func fieldValues(t *testing.T, o runtime.Object, key string) map[string]any {
	t.Helper()
	var m map[string]any
	if u, ok := o.(*unstructured.Unstructured); ok {
		m = u.Object
	} else {
		var err error
		m, err = runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		require.NoError(t, err)
	}
	out := map[string]any{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if k == key {
					out[path+"."+k] = e
				}
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("", m)
	return out
}

// Objects outside the release namespace (cluster-scoped ones, the Events' Role in
// events.namespace) are named after the namespace and the release: two releases in different
// namespaces never share one, however their names split on a dash.
func TestNamesOutsideTheNamespaceDoNotCollide(t *testing.T) {
	for _, mode := range []string{"cronjob", "deployment"} {
		t.Run(mode, func(t *testing.T) {
			outside := func(ns, release string) map[string]bool {
				r, err := render(t, minimal(t, everyOptionalObject[mode]), renderOpts{namespace: ns, releaseName: release})
				require.NoError(t, err)
				out := map[string]bool{}
				for _, o := range r.Objects {
					m, err := meta.Accessor(o)
					require.NoError(t, err)
					if m.GetNamespace() != ns {
						kind := o.GetObjectKind().GroupVersionKind().Kind
						out[fmt.Sprintf("%s %s/%s", kind, m.GetNamespace(), m.GetName())] = true
					}
				}
				return out
			}
			a, b := outside("team-a", "x"), outside("team", "a-x")
			require.Greater(t, len(a), 5, "ClusterRoles and bindings, the FlowSchema, Roles elsewhere")
			for name := range a {
				assert.False(t, b[name], "%s in both releases", name)
			}
		})
	}
}

// A release name YAML reads as a boolean, a number or null renders objects the API server accepts
// (each manifest is decoded into its Kubernetes type, strictly, as the install does), and every
// app.kubernetes.io/instance label and selector holds the name as a string.
func TestReleaseNamesYAMLReadsAsScalars(t *testing.T) {
	for _, name := range append(yamlScalarNames, "1.5") {
		for _, mode := range []string{"cronjob", "deployment"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				r, err := render(t, minimal(t, everyOptionalObject[mode]), renderOpts{releaseName: name})
				require.NoError(t, err)
				instances := 0
				for _, o := range r.Objects {
					m, err := meta.Accessor(o)
					require.NoError(t, err)
					assert.Equal(t, name, m.GetLabels()["app.kubernetes.io/instance"], "%T %s", o, m.GetName())
					// The labels of pod templates and the selectors too.
					for path, v := range fieldValues(t, o, "app.kubernetes.io/instance") {
						assert.Equal(t, name, v, "%T %s: %s", o, m.GetName(), path)
						instances++
					}
				}
				assert.Greater(t, instances, 20)
				assert.Equal(t, releaseNS+"/"+name, parsedConfig(t, r).Instance)
			})
		}
	}
}

// The same for the release namespace: every namespace field of every object is the namespace, as
// a string (but the Events' Role and RoleBinding, in default: events.namespace takes no other);
// maintenance.nodeMaintenance.namespace, which takes the same names, too.
func TestNamespacesYAMLReadsAsScalars(t *testing.T) {
	for _, ns := range yamlScalarNames {
		for _, mode := range []string{"cronjob", "deployment"} {
			t.Run(ns+"/"+mode, func(t *testing.T) {
				vals := minimal(t, everyOptionalObject[mode], fmt.Sprintf("{maintenance: {nodeMaintenance: {namespace: %q}}}", ns))
				r, err := render(t, vals, renderOpts{namespace: ns})
				require.NoError(t, err)
				namespaces := 0
				for _, o := range r.Objects {
					for path, v := range fieldValues(t, o, "namespace") {
						want := ns
						if strings.HasSuffix(objName(o), "-events") && !strings.HasPrefix(path, ".subjects[") {
							want = "default" // the Events' Role and RoleBinding; their subjects are the ServiceAccounts
						}
						assert.Equal(t, want, v, "%T %s: %s", o, objName(o), path)
						namespaces++
					}
					if u, ok := o.(*unstructured.Unstructured); ok && u.GetKind() == "ServiceMonitor" {
						names, found, err := unstructured.NestedSlice(u.Object, "spec", "namespaceSelector", "matchNames")
						require.NoError(t, err)
						require.True(t, found)
						assert.Equal(t, []any{ns}, names, "ServiceMonitor namespaceSelector")
					}
				}
				assert.Greater(t, namespaces, 15)
				cfg := parsedConfig(t, r)
				assert.Equal(t, ns+"/"+releaseName, cfg.Instance)
				assert.Equal(t, ns, cfg.Warmer.Namespace)
				assert.Equal(t, "default", cfg.Events.Namespace)
				assert.Equal(t, ns, cfg.Maintenance.NodeMaintenance.Namespace)
			})
		}
	}
}

// Names that come from values (nameOverride, fullnameOverride, serviceAccount.name, the priority
// classes) may be such words too: as strings, in a values file or with --set-string.
func TestNameValuesYAMLReadsAsScalars(t *testing.T) {
	cases := []struct {
		name, release, extra string
		check                func(t *testing.T, r *rendered)
	}{
		{"fullnameOverride", releaseName, `fullnameOverride: "123"`, func(t *testing.T, r *rendered) {
			assert.Equal(t, "123", find[*appsv1.Deployment](t, r, "").Name)
			assert.Equal(t, "123", find[*corev1.ConfigMap](t, r, "").Name)
			assert.Equal(t, "123-warmer", warmer(t, r).Name)
			assert.Len(t, all[*corev1.ServiceAccount](r), 2, "the orchestrator's and the uninstall hook's")
			assert.Equal(t, "123", find[*corev1.ServiceAccount](t, r, "123").Name)
			assert.Equal(t, "123-cleanup", find[*corev1.ServiceAccount](t, r, "-cleanup").Name)
			assert.Equal(t, releaseNS+".123", find[*rbacv1.ClusterRole](t, r, "").Name)
			for name, pod := range orchestratorPods(t, r) {
				assert.Equal(t, "123", pod.Volumes[0].ConfigMap.Name, name)
				if strings.HasSuffix(name, "-cleanup") {
					assert.Equal(t, "123-cleanup", pod.ServiceAccountName, name)
				} else {
					assert.Equal(t, "123", pod.ServiceAccountName, name)
				}
			}
		}},
		{"nameOverride", releaseName, `nameOverride: "on"`, func(t *testing.T, r *rendered) {
			for _, o := range r.Objects {
				m, err := meta.Accessor(o)
				require.NoError(t, err)
				assert.Equal(t, "on", m.GetLabels()["app.kubernetes.io/name"], "%T %s", o, m.GetName())
				for path, v := range fieldValues(t, o, "app.kubernetes.io/name") {
					assert.Equal(t, "on", v, "%T %s: %s", o, m.GetName(), path)
				}
			}
		}},
		// The release name contains nameOverride: the full name is the release name alone.
		{"nameOverride in the release name", "1", `nameOverride: "1"`, func(t *testing.T, r *rendered) {
			assert.Equal(t, "1", find[*appsv1.Deployment](t, r, "").Name)
			assert.Equal(t, "1", find[*corev1.ConfigMap](t, r, "").Name)
		}},
		{"serviceAccount.name", releaseName, `serviceAccount: {name: "true"}`, func(t *testing.T, r *rendered) {
			assert.Equal(t, "true", find[*corev1.ServiceAccount](t, r, "true").Name)
			for _, rb := range all[*rbacv1.RoleBinding](r) {
				if strings.HasSuffix(rb.Name, "-uninstall") {
					assert.Equal(t, "true-cleanup", rb.Subjects[0].Name, rb.Name)
					continue
				}
				assert.Equal(t, "true", rb.Subjects[0].Name, rb.Name)
			}
			for name, pod := range orchestratorPods(t, r) {
				if strings.HasSuffix(name, "-cleanup") {
					assert.Equal(t, "true-cleanup", pod.ServiceAccountName, name)
				} else {
					assert.Equal(t, "true", pod.ServiceAccountName, name)
				}
			}
		}},
		{"existing serviceAccount.name", releaseName, `serviceAccount: {create: false, name: "null"}`, func(t *testing.T, r *rendered) {
			for name, pod := range orchestratorPods(t, r) {
				assert.Equal(t, "null", pod.ServiceAccountName, name)
			}
		}},
		{"priority classes", releaseName, `{orchestrator: {priorityClassName: "yes"}, prewarm: {priorityClassName: "1e3"}}`, func(t *testing.T, r *rendered) {
			for name, pod := range orchestratorPods(t, r) {
				assert.Equal(t, "yes", pod.PriorityClassName, name)
			}
			assert.Equal(t, "1e3", warmer(t, r).Spec.Template.Spec.PriorityClassName)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render(t, minimal(t, everyOptionalObject["deployment"], tc.extra), renderOpts{releaseName: tc.release})
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

package chart_test

// RBAC no broader than the API calls the orchestrator makes (pkg/engine, pkg/controller,
// pkg/sources, pkg/cli).

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The Deployment's leader election (client-go LeaseLock) gets, creates and updates one Lease, the
// one named by --leader-elect-name. get and update can be limited to that name (create cannot):
// unlimited, the ServiceAccount may rewrite every Lease of the release namespace, e.g. the leader
// election Leases of kube-scheduler and kube-controller-manager when installed in kube-system.
func TestLeaseRBACIsLimitedToTheChartsLease(t *testing.T) {
	r := mustRender(t, minimal(t, "orchestrator: {mode: deployment}"))
	d := find[*appsv1.Deployment](t, r, "")
	var lease string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--leader-elect-name="); ok {
			lease = v
		}
	}
	require.NotEmpty(t, lease, "the Deployment names its Lease")

	var found bool
	for _, role := range all[*rbacv1.Role](r) {
		for _, rule := range role.Rules {
			if !contains(rule.APIGroups, "coordination.k8s.io") || !contains(rule.Resources, "leases") {
				continue
			}
			found = true
			for _, verb := range rule.Verbs {
				if verb == "create" {
					continue // cannot be limited by name
				}
				assert.Equal(t, []string{lease}, rule.ResourceNames,
					"Role %s grants %q on leases of namespace %s: only the Lease %q is used", role.Name, verb, role.Namespace, lease)
			}
		}
	}
	assert.True(t, found, "deployment mode grants the Lease")
}

// With maintenance.nodeMaintenance.namespace set, the source lists and watches the resource in that
// namespace only (sources.Collector.Resource, the namespaced dynamic informer of
// controller.startMaintenanceInformer); the ClusterRole still grants reading it in every namespace.
func TestNamespacedMaintenanceSourceIsNotReadClusterWide(t *testing.T) {
	r := mustRender(t, minimal(t,
		"maintenance: {nodeMaintenance: {group: upgrades.example.com, version: v1, resource: drains, namespace: ops}}"))
	cr := find[*rbacv1.ClusterRole](t, r, "")
	for _, rule := range cr.Rules {
		assert.False(t, contains(rule.APIGroups, "upgrades.example.com") && contains(rule.Resources, "drains"),
			"ClusterRole %s grants %v on drains.upgrades.example.com in every namespace; the source reads namespace ops only", cr.Name, rule.Verbs)
	}
	var granted bool
	for _, role := range all[*rbacv1.Role](r) {
		if role.Namespace != "ops" {
			continue
		}
		for _, rule := range role.Rules {
			if contains(rule.APIGroups, "upgrades.example.com") && contains(rule.Resources, "drains") &&
				contains(rule.Verbs, "list") && contains(rule.Verbs, "watch") {
				granted = true
			}
		}
	}
	assert.True(t, granted, "a Role in namespace ops grants list and watch on drains.upgrades.example.com")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

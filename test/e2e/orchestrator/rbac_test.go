package orchestrator_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// serviceAccountToken creates the ServiceAccount sa in the test's namespace, bound to a
// ClusterRole of rules, and returns a token of it. The API server's authorizer learns of the
// binding a little later: callers retry their first request.
func (e *env) serviceAccountToken(sa string, rules []rbacv1.PolicyRule) string {
	e.T.Helper()
	name := "e2e-" + sa + "-" + e.Name
	_, err := e.client.CoreV1().ServiceAccounts(e.Name).Create(e.Ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	require.NoError(e.T, err)
	rbac := e.client.RbacV1()
	_, err = rbac.ClusterRoles().Create(e.Ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
	require.NoError(e.T, err)
	e.T.Cleanup(func() { _ = rbac.ClusterRoles().Delete(e.Ctx, name, metav1.DeleteOptions{}) })
	_, err = rbac.ClusterRoleBindings().Create(e.Ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: e.Name, Name: sa}},
	}, metav1.CreateOptions{})
	require.NoError(e.T, err)
	e.T.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(e.Ctx, name, metav1.DeleteOptions{}) })
	expiry := int64(600)
	tr, err := e.client.CoreV1().ServiceAccounts(e.Name).CreateToken(e.Ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	require.NoError(e.T, err)
	return tr.Status.Token
}

// readOnlyRules are the chart's permissions (rbac.yaml) without patch on nodes: everything a cycle
// reads, Events, and the Lease a cycle holds.
func readOnlyRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{framework.NodeMaintenanceGroup}, Resources: []string{framework.NodeMaintenanceResource}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"controllerrevisions"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "update", "create"}},
	}
}

// design.md: run --once exits non-zero when the cycle could not complete, RBAC denied included,
// so that Job backoff and alerts see it. Credentials that may read everything but not patch
// nodes: the cycle wants to enter a node in maintenance (a dry run under the same token plans
// it), the patch is refused, the binary exits 1 naming the refusal, and the node is untouched.
func TestRunOnceExitsNonZeroWhenRBACDeniesAWrite(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	e.Maintenance("a")
	kubeconfig := framework.TokenKubeconfig(t, cluster.Kubeconfig, t.TempDir(), e.serviceAccountToken("no-patch", readOnlyRules()))

	// RBAC answers as soon as the binding is in the authorizer's cache: retry the dry run until
	// it completes. It reads what the cycle reads and plans the entry.
	var dry result
	e.eventually("a dry run under the token", func() bool {
		dry = e.runBinary(e.configYAML(), "run", "--once", "--dry-run", "--kubeconfig", kubeconfig)
		return dry.code == 0
	})
	require.Regexp(t, e.NodeName("a")+`\s+enter\s+nodeMaintenance`, dry.stdout, "the cycle wants to enter the node")

	res := e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", kubeconfig)
	assert.Equal(t, 1, res.code, "exit code\n%s", res.stderr)
	line := lastLine(res.stderr)
	assert.True(t, strings.HasPrefix(line, "prewarm-orchestrator: cycle failed: "), line)
	assert.Contains(t, line, "forbidden")
	assert.Contains(t, line, e.NodeName("a"))
	assert.NotContains(t, res.stderr, "cycle complete")
	e.RequireUntouched("a")
	assert.Empty(t, e.Events("a", ""), "nothing was written, so no Event says it was")
}

// Credentials that may do everything a cycle does but read the Lease (a user's own, for a run
// from a workstation): run --once fails at once naming the Lease and the refusal, with nothing
// written, rather than waiting for a Lease it cannot read; --leader-elect=false runs the cycle.
func TestRunOnceWithoutTheLease(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	e.Maintenance("a")
	var rules []rbacv1.PolicyRule
	for _, r := range readOnlyRules() {
		switch {
		case slices.Contains(r.Resources, "leases"):
			continue
		case slices.Contains(r.Resources, "nodes"):
			r.Verbs = append(r.Verbs, "patch")
		}
		rules = append(rules, r)
	}
	kubeconfig := framework.TokenKubeconfig(t, cluster.Kubeconfig, t.TempDir(), e.serviceAccountToken("no-lease", rules))

	// RBAC answers as soon as the binding is in the authorizer's cache (the Lease is refused
	// before and after): wait for a dry run, which takes no Lease, to complete under the token.
	e.eventually("a dry run under the token", func() bool {
		return e.runBinary(e.configYAML(), "run", "--once", "--dry-run", "--kubeconfig", kubeconfig).code == 0
	})
	res := e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", kubeconfig)
	assert.Equal(t, 1, res.code, res.stderr)
	line := lastLine(res.stderr)
	assert.True(t, strings.HasPrefix(line, "prewarm-orchestrator: cycle not run: lease "+e.Config.Warmer.Namespace+"/"), line)
	assert.Contains(t, line, "forbidden")
	e.RequireUntouched("a")

	res = e.runBinary(e.configYAML(), "run", "--once", "--leader-elect=false", "--kubeconfig", kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	e.requirePhase("a", state.PhaseTainted, "upgrading")
}

// A cycle that cannot read the maintenance objects (RBAC here; a CRD conversion webhook that is
// down, or throttling, in the field) plans without them: the warm node a is released, the node b
// whose maintenance began is not entered, and c, tainted for a NodeMaintenance, does not leave
// maintenance (cancelAfter 0s would release it cancelled at once if the source counted as empty).
// The binary then exits 1 naming the read. cleanup reads no maintenance object and succeeds.
func TestRunOnceWithoutTheMaintenanceObjects(t *testing.T) {
	e := newEnv(t, kernelTarget, func(c *config.Config) { c.CancelAfter = config.NewDuration(0) })
	for _, n := range []string{"a", "b", "c"} {
		e.PoolNode(n)
	}
	e.Warmer()
	e.Maintenance("a")
	e.Maintenance("c")
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.requirePhase("c", state.PhaseTainted, "upgrading")
	e.Reboot("a", newKernel)
	e.waitWarmerReady("a")
	e.Maintenance("b")

	kubeconfig := e.noMaintenanceKubeconfig()
	res := e.runWithoutTheMaintenanceObjects(kubeconfig)
	assert.Equal(t, 1, res.code, "exit code\n%s", res.stderr)
	line := lastLine(res.stderr)
	assert.True(t, strings.HasPrefix(line, "prewarm-orchestrator: cycle failed: the maintenance objects could not be read"), line)
	assert.Contains(t, line, "forbidden")
	assert.Contains(t, line, framework.NodeMaintenanceResource)
	e.RequireReleased("a", state.ReasonWarm)
	e.RequireUntouched("b")
	e.requirePhase("c", state.PhaseTainted, "upgrading")

	res = e.runBinary(e.configYAML(), "cleanup", "--kubeconfig", kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	e.RequireReleased("c", state.ReasonCleanup)
	e.RequireUntouched("b")
}

// noMaintenanceKubeconfig returns a kubeconfig whose credentials may do what a cycle does but
// read the NodeMaintenance objects.
func (e *env) noMaintenanceKubeconfig() string {
	e.T.Helper()
	var rules []rbacv1.PolicyRule
	for _, r := range readOnlyRules() {
		switch {
		case slices.Contains(r.Resources, framework.NodeMaintenanceResource):
			continue
		case slices.Contains(r.Resources, "nodes"):
			r.Verbs = append(r.Verbs, "patch")
		}
		rules = append(rules, r)
	}
	return framework.TokenKubeconfig(e.T, cluster.Kubeconfig, e.T.TempDir(), e.serviceAccountToken("no-maintenance", rules))
}

// runWithoutTheMaintenanceObjects runs a cycle under noMaintenanceKubeconfig's credentials.
// Until the binding reaches the authorizer, the node lists are refused too (nothing written).
func (e *env) runWithoutTheMaintenanceObjects(kubeconfig string) result {
	e.T.Helper()
	var res result
	e.eventually("a cycle under the token", func() bool {
		res = e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", kubeconfig)
		return strings.Contains(res.stderr, "could not be read")
	})
	return res
}

// An upgrade seen by a cycle that cannot read the NodeMaintenance objects: a NodeMaintenance that
// joined since the entry is missing from what that cycle records. The warm release, reading
// them again, counts it as one the upgrade was for by its creation time, and takes one created
// after the upgrade was seen for the next maintenance: the node is tainted again for it.
func TestUpgradeSeenWithoutTheMaintenanceObjects(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	own, err := cluster.CreateNodeMaintenance(e.Ctx, e.NodeName("a"), e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	joined, err := cluster.CreateNodeMaintenance(e.Ctx, e.NodeName("a")+"-joined", e.NodeName("a"))
	require.NoError(t, err)
	e.Reboot("a", "6.8.0-200")
	// Creation times have whole seconds: the upgrade is seen in a later one.
	time.Sleep(time.Until(joined.GetCreationTimestamp().Add(1100 * time.Millisecond)))

	res := e.runWithoutTheMaintenanceObjects(e.noMaintenanceKubeconfig())
	require.Equal(t, 1, res.code, res.stderr)
	e.requirePhase("a", state.PhaseWarming, "warming")
	n := e.Node("a")
	assert.Equal(t, n.Status.NodeInfo.BootID, n.Annotations[state.UpgradedBootID])
	assert.Equal(t, framework.NodeMaintenanceResource+"."+framework.NodeMaintenanceVersion+"."+framework.NodeMaintenanceGroup, n.Annotations[state.UpgradedUnread])
	assert.Equal(t, string(own.GetUID()), n.Annotations[state.MaintenanceID], "the joined one could not be read")

	upgradedAt, ok := state.Time(n, state.UpgradedAt)
	require.True(t, ok)
	next, err := cluster.CreateNodeMaintenance(e.Ctx, e.NodeName("a")+"-next", e.NodeName("a"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, next.GetCreationTimestamp().Unix(), upgradedAt.Unix(), "created after the upgrade was seen")
	e.waitWarmerReady("a")
	e.cycle()
	n = e.RequireReleased("a", state.ReasonWarm)
	ids := []string{string(own.GetUID()), string(joined.GetUID())}
	slices.Sort(ids)
	assert.Equal(t, strings.Join(ids, ","), n.Annotations[state.MaintenanceID])

	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	n = e.Node("a")
	assert.Contains(t, n.Annotations[state.MaintenanceID], string(next.GetUID()))
}

package orchestrator_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// An upgrade rule that broke after nodes were tainted (a helm upgrade to an upgrade.when that
// fails on the sample node): run refuses the configuration, and cleanup, which needs no rule,
// releases the nodes anyway, so neither they nor the chart's uninstall are held by it.
func TestCleanupWithABrokenUpgradeRule(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	e.Maintenance("a")
	e.runOnce()
	e.requireTainted("a")

	e.Config.Upgrade.When = `{{ eq .Labels.pool "notebooks" }}`
	broken := e.configYAML()
	res := e.runBinary(broken, "run", "--once", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 2, res.code, res.stderr)
	assert.Contains(t, lastLine(res.stderr), "upgrade.when")
	e.requireTainted("a")

	res = e.runBinary(broken, "cleanup", "--uninstall", "--settle", "1s", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stderr, "used without its upgrade rule")
	assert.Contains(t, res.stderr, "upgrade.when")
	e.RequireReleased("a", state.ReasonCleanup)
}

package controller

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8stesting "k8s.io/client-go/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// An entry left to the next plan because the release it counted on failed is re-planned after
// retryAfterError, like the failed release: a release that keeps failing is not re-sent in a loop.
func TestDeferredEntryDoesNotLoopAFailingRelease(t *testing.T) {
	now := time.Now()
	timedOut := tu.Node("m", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
			state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-0",
			state.TaintedAt, state.FormatTime(now.Add(-4*time.Hour)),
			state.UpgradedAt, state.FormatTime(now.Add(-3*time.Hour)))) // maxWaitForWarm (2h) passed
	candidate := tu.Node("n", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	client := withWarmer(timedOut, candidate)
	var attempts atomic.Int32
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() == "m" {
			attempts.Add(1)
			return true, nil, apierrors.NewInternalError(errors.New("admission webhook denied"))
		}
		return false, nil, nil
	})
	c := newTestController(t, client, nil, func(cfg *config.Config) { cfg.MaxConcurrent = intstr.FromInt32(1) }, false)
	lead(t, c, retryAfterError/2)
	assert.LessOrEqual(t, int(attempts.Load()), 2,
		"the failing release of m should be retried after retryAfterError (%s), not in a loop driven by the deferred entry", retryAfterError)
}

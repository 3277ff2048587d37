package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A failed release holds back only the entries that needed its slot: with room in the budget
// (maxConcurrent 5, one node active) or no budget ("0%" means no limit), the entry is written.
func TestFailedReleaseDefersEntryOnlyWhenBudgetNeedsIt(t *testing.T) {
	for _, budget := range []intstr.IntOrString{intstr.FromInt32(5), intstr.FromString("0%")} {
		t.Run(budget.String(), func(t *testing.T) {
			timedOut := tu.Node("m", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
				tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
				tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
					state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-0",
					state.TaintedAt, state.FormatTime(t0.Add(-4*time.Hour)),
					state.UpgradedAt, state.FormatTime(t0.Add(-3*time.Hour)))) // maxWaitForWarm (2h) passed
			candidate := tu.Node("n", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
			client := withWarmer(timedOut, candidate)
			client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
				if act.(k8stesting.PatchAction).GetName() == "m" {
					return true, nil, apierrors.NewInternalError(errors.New("admission webhook denied the request"))
				}
				return false, nil, nil
			})
			cfg := testConfig(t)
			cfg.MaxConcurrent = budget
			e, err := New(Options{Config: cfg, Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.NoError(t, err)

			for cycle := 0; cycle < 3; cycle++ {
				_, _ = e.RunOnce(context.Background())
			}
			n, err := client.CoreV1().Nodes().Get(context.Background(), "n", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, state.PhaseTainted, state.PhaseOf(n),
				"maxConcurrent %s leaves room for n even with m still warming, yet n is never entered", budget.String())
		})
	}
}

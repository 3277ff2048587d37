package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// The orchestrator run on the host gets the chart's -v flag, from the CronJob the demo's values
// render, or from the Deployment values in deployment mode render; none is no flag.
func TestChartVerbosity(t *testing.T) {
	o := Options{Release: "demo", Namespace: "ns"}
	meta := metav1.ObjectMeta{Name: "demo-image-prewarmer", Namespace: "ns", Labels: map[string]string{
		"app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "orchestrator"}}
	pod := func(args ...string) corev1.PodSpec {
		return corev1.PodSpec{Containers: []corev1.Container{{Name: "orchestrator", Args: args}}}
	}
	cronJob := &batchv1.CronJob{ObjectMeta: meta}
	cronJob.Spec.JobTemplate.Spec.Template.Spec = pod("run", "--once", "-v=1")
	deployment := &appsv1.Deployment{ObjectMeta: meta}
	deployment.Spec.Template.Spec = pod("run", "-v=3")
	other := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "ns", Labels: map[string]string{
		"app.kubernetes.io/instance": "other", "app.kubernetes.io/component": "orchestrator"}}}
	other.Spec.JobTemplate.Spec.Template.Spec = pod("-v=9")

	for name, tc := range map[string]struct {
		objects []runtime.Object
		want    string
	}{
		"cronjob":         {objects: []runtime.Object{cronJob, other}, want: "-v=1"},
		"deployment mode": {objects: []runtime.Object{deployment, other}, want: "-v=3"},
		"none":            {objects: []runtime.Object{other}, want: ""},
	} {
		got, err := chartVerbosity(context.Background(), fake.NewClientset(tc.objects...), o)
		require.NoError(t, err, name)
		assert.Equal(t, tc.want, got, name)
	}
}

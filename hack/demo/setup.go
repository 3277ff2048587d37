package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// heartbeat is how long a silent build may run before the demo says it is still working.
const heartbeat = 30 * time.Second

// demoEnv is what the set-up produced: a cluster with the chart installed and the pool created.
type demoEnv struct {
	cluster *framework.Cluster
	// cfg is the chart's rendered configuration; configPath is where it was written for the
	// orchestrator.
	cfg        *config.Config
	configPath string
	// verbosity is the chart's -v flag for the orchestrator ("-v=2"), "" when it renders none.
	verbosity string
	// binary is the orchestrator built from ./cmd/prewarm-orchestrator.
	binary string
	// poolNodes are the names of the pool's nodes, in upgrade order.
	poolNodes []string
	// targetKernel is the kernel the pool is upgraded onto.
	targetKernel string
	// tools is the directory of the pinned tools (kubectl, helm).
	tools string
}

// setUp builds what is missing and brings up a fresh cluster with the chart and the nodes.
func setUp(ctx context.Context, o Options, out io.Writer) (*demoEnv, error) {
	if err := os.MkdirAll(o.StateDir(), 0o755); err != nil {
		return nil, fmt.Errorf("creating the demo directory %s: %w", o.StateDir(), err)
	}

	start := time.Now()
	say(out, "checking the pinned tools (the first build takes about 10 minutes on 2 cores; later runs reuse %s)", o.Cache)
	bin, err := streamCommand(ctx, out, o.Root, "building the pinned tools", filepath.Join(o.Root, "hack", "tools", "install.sh"),
		"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "kwokctl", "helm")
	if err != nil {
		return nil, err
	}
	bin = strings.TrimSpace(bin)
	say(out, "tools ready in %s", since(start))

	// The orchestrator builds while the cluster starts.
	binary := filepath.Join(o.StateDir(), "prewarm-orchestrator")
	built := make(chan error, 1)
	say(out, "building prewarm-orchestrator from ./cmd/prewarm-orchestrator (in the background)")
	buildStart := time.Now()
	go func() { built <- buildOrchestrator(ctx, o.Root, binary, o.LDFlags) }()

	start = time.Now()
	cluster, err := freshCluster(ctx, o, out)
	if err != nil {
		return nil, err
	}
	say(out, "cluster %s ready in %s (KUBECONFIG=%s)", cluster.Name, since(start), cluster.Kubeconfig)

	start = time.Now()
	if err := cluster.InstallNodeMaintenanceCRD(ctx); err != nil {
		return nil, err
	}
	if err := restrictedNamespace(ctx, cluster.Client, o.Namespace); err != nil {
		return nil, err
	}
	if err := helmInstall(ctx, o, filepath.Join(bin, "helm"), cluster.Kubeconfig); err != nil {
		return nil, err
	}
	configPath := filepath.Join(o.StateDir(), "config.yaml")
	cfg, err := chartConfig(ctx, cluster.Client, o, configPath)
	if err != nil {
		return nil, err
	}
	verbosity, err := chartVerbosity(ctx, cluster.Client, o)
	if err != nil {
		return nil, err
	}
	if len(cfg.Upgrade.KernelVersions) == 0 || cfg.Upgrade.KernelVersionLabel == "" {
		return nil, fmt.Errorf("values %s: the demo needs upgrade.kernelVersions and upgrade.kernelVersionLabel", o.Values)
	}
	say(out, "chart installed in %s: release %s in namespace %s (restricted Pod Security), CronJob suspended, NodeMaintenance CRD",
		since(start), o.Release, o.Namespace)

	start = time.Now()
	pool, err := createNodes(ctx, cluster, o, cfg)
	if err != nil {
		return nil, err
	}
	say(out, "created %d pool nodes (%s) and %d system nodes in %s, all on kernel %s",
		len(pool), labelString(cfg.Pool.NodeSelector), o.SystemNodes, since(start), o.FromKernel)

	select {
	case err = <-built:
	default:
		say(out, "waiting for the prewarm-orchestrator build (the first one compiles client-go: about a minute)")
		err = <-built
	}
	if err != nil {
		return nil, err
	}
	say(out, "prewarm-orchestrator built in %s: %s", since(buildStart), binary)
	return &demoEnv{
		cluster: cluster, cfg: cfg, configPath: configPath, verbosity: verbosity, binary: binary,
		poolNodes: pool, targetKernel: cfg.Upgrade.KernelVersions[0], tools: bin,
	}, nil
}

// freshCluster deletes the demo cluster if it exists and creates it again, so every run starts
// from the same state, and connects to it.
func freshCluster(ctx context.Context, o Options, out io.Writer) (*framework.Cluster, error) {
	script := filepath.Join(o.Root, "hack", "cluster.sh")
	workdir := os.Getenv("KWOK_WORKDIR") // as hack/cluster.sh reads it
	if workdir == "" {
		workdir = filepath.Join(o.Cache, "kwok")
	}
	if _, err := os.Stat(filepath.Join(workdir, "clusters", o.ClusterName)); err == nil {
		say(out, "deleting the previous demo cluster %s", o.ClusterName)
		if _, err := streamCommand(ctx, out, o.Root, "", script, "down", o.ClusterName); err != nil {
			return nil, err
		}
	}
	say(out, "starting cluster %s (etcd, kube-apiserver, controller-manager, scheduler, kwok on 127.0.0.1)", o.ClusterName)
	stdout, err := streamCommand(ctx, out, o.Root, "", script, "up", o.ClusterName)
	if err != nil {
		return nil, err
	}
	kubeconfig := strings.TrimSpace(stdout)
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	rc.QPS, rc.Burst = 100, 200
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("creating clientset for cluster %s: %w", o.ClusterName, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("creating dynamic client for cluster %s: %w", o.ClusterName, err)
	}
	return &framework.Cluster{Name: o.ClusterName, Kubeconfig: kubeconfig, RESTConfig: rc, Client: client, Dynamic: dyn}, nil
}

// Down deletes the demo's cluster and files.
func Down(ctx context.Context, o Options, out io.Writer) error {
	if _, err := streamCommand(ctx, out, o.Root, "", filepath.Join(o.Root, "hack", "cluster.sh"), "down", o.ClusterName); err != nil {
		return err
	}
	if err := os.RemoveAll(o.StateDir()); err != nil {
		return fmt.Errorf("removing the demo directory %s: %w", o.StateDir(), err)
	}
	say(out, "deleted cluster %s and %s", o.ClusterName, o.StateDir())
	return nil
}

func buildOrchestrator(ctx context.Context, root, binary, ldflags string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", binary, "./cmd/prewarm-orchestrator")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building ./cmd/prewarm-orchestrator: %w\n%s", err, out)
	}
	return nil
}

func restrictedNamespace(ctx context.Context, client kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
		"pod-security.kubernetes.io/warn":            "restricted",
	}}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// helmInstall installs the chart with the demo values. The chart's CronJob is suspended: the demo
// runs the orchestrator on this machine every few seconds instead, and one writer is easier to
// follow than two (under kwok the CronJob's pods never run the binary anyway).
func helmInstall(ctx context.Context, o Options, helm, kubeconfig string) error {
	logPath := filepath.Join(o.StateDir(), "helm.log")
	cmd := exec.CommandContext(ctx, helm, "install", o.Release, filepath.Join(o.Root, "charts", "image-prewarmer"),
		"--kubeconfig", kubeconfig, "--namespace", o.Namespace, "--values", o.ValuesPath(),
		"--set", "orchestrator.cronJob.suspend=true", "--wait", "--timeout", "2m")
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return fmt.Errorf("installing chart release %s in namespace %s: %w\n%s", o.Release, o.Namespace, err, out)
	}
	return nil
}

// chartConfig reads the configuration the chart rendered (its ConfigMap's config.yaml), writes it
// to path for the orchestrator and returns it decoded.
func chartConfig(ctx context.Context, client kubernetes.Interface, o Options, path string) (*config.Config, error) {
	sel := "app.kubernetes.io/instance=" + o.Release + ",app.kubernetes.io/component=config"
	list, err := client.CoreV1().ConfigMaps(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("listing the config map of release %s: %w", o.Release, err)
	}
	if len(list.Items) != 1 {
		return nil, fmt.Errorf("finding the config map of release %s: %d match %s", o.Release, len(list.Items), sel)
	}
	cm := list.Items[0]
	data, ok := cm.Data["config.yaml"]
	if !ok {
		return nil, fmt.Errorf("config map %s/%s has no config.yaml", cm.Namespace, cm.Name)
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("config map %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		return nil, fmt.Errorf("writing config %s: %w", path, err)
	}
	return cfg, nil
}

// chartVerbosity reads the -v flag of the orchestrator the chart rendered (its suspended CronJob's
// container, or its Deployment's for values in deployment mode), so that the orchestrator run on
// the host logs as the values say; "" when it renders none.
func chartVerbosity(ctx context.Context, client kubernetes.Interface, o Options) (string, error) {
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + o.Release + ",app.kubernetes.io/component=orchestrator"}
	var containers []corev1.Container
	cronJobs, err := client.BatchV1().CronJobs(o.Namespace).List(ctx, sel)
	if err != nil {
		return "", fmt.Errorf("listing the CronJob of release %s: %w", o.Release, err)
	}
	for _, c := range cronJobs.Items {
		containers = append(containers, c.Spec.JobTemplate.Spec.Template.Spec.Containers...)
	}
	deployments, err := client.AppsV1().Deployments(o.Namespace).List(ctx, sel)
	if err != nil {
		return "", fmt.Errorf("listing the Deployment of release %s: %w", o.Release, err)
	}
	for _, d := range deployments.Items {
		containers = append(containers, d.Spec.Template.Spec.Containers...)
	}
	for _, c := range containers {
		for _, a := range c.Args {
			if strings.HasPrefix(a, "-v=") {
				return a, nil
			}
		}
	}
	return "", nil
}

// createNodes creates the pool nodes (the pool selector's labels, kernel FromKernel in the node's
// status and in the kernel label) and the system nodes, in parallel, and returns the pool's names.
func createNodes(ctx context.Context, c *framework.Cluster, o Options, cfg *config.Config) ([]string, error) {
	type spec struct {
		name   string
		labels map[string]string
	}
	var specs []spec
	var pool []string
	for i := 1; i <= o.PoolNodes; i++ {
		labels := map[string]string{cfg.Upgrade.KernelVersionLabel: o.FromKernel}
		for k, v := range cfg.Pool.NodeSelector {
			labels[k] = v
		}
		name := fmt.Sprintf("notebook-%02d", i)
		specs = append(specs, spec{name, labels})
		pool = append(pool, name)
	}
	for i := 1; i <= o.SystemNodes; i++ {
		specs = append(specs, spec{fmt.Sprintf("system-%d", i), map[string]string{
			"node-role.kubernetes.io/system": "", cfg.Upgrade.KernelVersionLabel: o.FromKernel,
		}})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	limit := make(chan struct{}, 8)
	for i, s := range specs {
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			_, errs[i] = c.CreateNode(ctx, s.name, framework.WithLabels(s.labels), framework.WithKernel(o.FromKernel))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return pool, nil
}

// streamCommand runs name with args in dir, copies its stderr to out line by line (prefixed as
// the scripts prefix their own lines), says it is still working when it is silent for a while
// (what names the work, or nothing), and returns its stdout.
func streamCommand(ctx context.Context, out io.Writer, dir, what, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", fmt.Errorf("running %s: %w", filepath.Base(name), err)
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("running %s: %w", filepath.Base(name), err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	var tail []string
	start := time.Now()
	timer := time.NewTimer(heartbeat)
	defer timer.Stop()
	for done := false; !done; {
		select {
		case line, ok := <-lines:
			if !ok {
				done = true
				break
			}
			fmt.Fprintln(out, line)
			tail = append(tail, line)
			timer.Reset(heartbeat)
		case <-timer.C:
			if what != "" {
				say(out, "still %s (%s so far)", what, since(start))
			}
			timer.Reset(heartbeat)
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

func labelString(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

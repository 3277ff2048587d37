// Package framework runs the e2e tests against a real control plane: a kwokctl cluster (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kwok) started by hack/cluster.sh, with
// fake kwok nodes, fixture builders for the warmer DaemonSet and the NodeMaintenance CRD, and kwok
// Stages (hack/kwok/stages.yaml) that simulate slow and failing image pulls.
package framework

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KeepClusterEnv names the environment variable that, set to 1, keeps the cluster after the tests
// (Stop does nothing and prints how to reach and delete it).
const KeepClusterEnv = "E2E_KEEP_CLUSTER"

// modulePath identifies the repository root: the directory whose go.mod declares it.
const modulePath = "github.com/image-prewarmer/image-prewarmer"

// Cluster is a running local cluster and clients for it.
type Cluster struct {
	// Name is the kwokctl cluster name.
	Name string
	// Kubeconfig is the path of an admin kubeconfig for the cluster.
	Kubeconfig string
	// RESTConfig is the client configuration built from Kubeconfig.
	RESTConfig *rest.Config
	// Client is a typed clientset.
	Client kubernetes.Interface
	// Dynamic is a dynamic client, for custom resources.
	Dynamic dynamic.Interface

	repoRoot string
	keep     bool
	// reaper deletes the cluster when this process dies without calling Stop (see startReaper).
	reaper    *exec.Cmd
	reaperIn  io.WriteCloser
	reaperLog string
}

// Start brings up a fresh cluster named after prefix plus a random suffix (so test packages
// running in parallel, and leftovers of earlier runs, never collide) and returns it once the API
// server answers and the default service account exists. Call Stop to delete it; until then a
// helper process deletes it if this process dies first, unless E2E_KEEP_CLUSTER=1.
func Start(ctx context.Context, prefix string) (*Cluster, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	name, err := uniqueName(prefix)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: name, repoRoot: root, keep: os.Getenv(KeepClusterEnv) == "1"}

	out, err := c.script(ctx, "up")
	if err != nil {
		// A half-created cluster is not left behind.
		_, _ = c.script(context.WithoutCancel(ctx), "down")
		return nil, fmt.Errorf("starting cluster %s: %w", name, err)
	}
	c.Kubeconfig = strings.TrimSpace(out)
	if !c.keep {
		if err := c.startReaper(); err != nil {
			_, _ = c.script(context.WithoutCancel(ctx), "down")
			return nil, fmt.Errorf("starting the reaper of cluster %s: %w", name, err)
		}
	}
	if err := c.connect(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Stop deletes the cluster, or with E2E_KEEP_CLUSTER=1 prints how to use and delete it.
// It is safe to call more than once.
func (c *Cluster) Stop() {
	if c.keep {
		fmt.Fprintf(os.Stderr, "%s=1: keeping cluster %s\n  export KUBECONFIG=%s\n  delete it with: hack/cluster.sh down %s\n",
			KeepClusterEnv, c.Name, c.Kubeconfig, c.Name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.script(ctx, "down")
	if err != nil {
		fmt.Fprintf(os.Stderr, "deleting cluster %s: %v (the reaper retries)\n", c.Name, err)
	}
	if c.reaperIn != nil {
		if err == nil {
			// Tell the reaper the cluster is gone; on EOF alone it would delete it again.
			_, _ = io.WriteString(c.reaperIn, "stopped\n")
		}
		_ = c.reaperIn.Close()
		if c.reaper.Wait() == nil && err == nil {
			_ = os.Remove(c.reaperLog)
		}
		c.reaperIn = nil
	}
}

// Main is the body of a test package's TestMain: it starts one cluster for the package (named
// after prefix), passes it to use (which typically stores it in a package variable), runs the
// tests and deletes the cluster, then exits with the tests' code. The cluster is deleted even
// when a test panics or the process is interrupted (by the reaper, see Start), and kept with
// E2E_KEEP_CLUSTER=1.
func Main(m *testing.M, prefix string, use func(*Cluster)) {
	os.Exit(run(m, prefix, use))
}

func run(m *testing.M, prefix string, use func(*Cluster)) int {
	// An interrupt during Start cancels it (and deletes the half-made cluster); afterwards the
	// default handling applies again: the process dies and the reaper deletes the cluster.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	start := time.Now()
	c, err := Start(ctx, prefix)
	stopSignals()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer c.Stop()
	fmt.Fprintf(os.Stderr, "e2e: cluster %s up in %s (KUBECONFIG=%s)\n", c.Name, time.Since(start).Round(100*time.Millisecond), c.Kubeconfig)
	use(c)
	defer removeOrchestratorBuild()
	return m.Run()
}

func (c *Cluster) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig %s: %w", c.Kubeconfig, err)
	}
	// Tests create objects in bursts; the client-side default of 5 QPS would slow them down.
	cfg.QPS, cfg.Burst = 100, 200
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating clientset for cluster %s: %w", c.Name, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client for cluster %s: %w", c.Name, err)
	}
	c.RESTConfig, c.Client, c.Dynamic = cfg, client, dyn
	return nil
}

// script runs hack/cluster.sh ACTION NAME and returns its stdout.
func (c *Cluster) script(ctx context.Context, action string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.repoRoot, "hack", "cluster.sh"), action, c.Name)
	cmd.Dir = c.repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/cluster.sh %s %s: %w\n%s", action, c.Name, err, stderr.String())
	}
	return stdout.String(), nil
}

// startReaper starts a process, in its own process group (so a Ctrl-C aimed at the tests does not
// reach it), that waits for this process to close its stdin and then deletes the cluster, unless
// it read "stopped" first. Any exit of this process closes the pipe: a normal return, os.Exit, a
// panic in a test goroutine, a go test timeout, a signal. Its output goes to a log file next to
// the cluster directories.
func (c *Cluster) startReaper() error {
	logPath := filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(c.Kubeconfig))), "logs", c.Name+"-reaper.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening reaper log: %w", err)
	}
	defer logFile.Close()
	const body = `read -r msg; [ "$msg" = stopped ] && exit 0; echo "test process gone: deleting cluster $1"; exec "$0" down "$1"`
	cmd := exec.Command("bash", "-c", body, filepath.Join(c.repoRoot, "hack", "cluster.sh"), c.Name)
	cmd.Dir = c.repoRoot
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("creating reaper stdin: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting reaper: %w", err)
	}
	c.reaper, c.reaperIn, c.reaperLog = cmd, in, logPath
	return nil
}

// RepoRoot walks up from the working directory to the directory whose go.mod declares this
// module: the repository root, where hack/ and charts/ live.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("finding the repository root: no go.mod for %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func isModuleRoot(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

// uniqueName returns prefix-<6 hex>, lowercased and trimmed to a valid cluster name.
func uniqueName(prefix string) (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a cluster name: %w", err)
	}
	prefix = strings.Trim(strings.ToLower(prefix), "-")
	if prefix == "" {
		return "", errors.New("generating a cluster name: empty prefix")
	}
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	return prefix + "-" + hex.EncodeToString(b), nil
}

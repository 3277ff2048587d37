package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// BuildOrchestrator builds cmd/prewarm-orchestrator into dir and returns the binary's path.
func BuildOrchestrator(dir string) (string, error) {
	bin := filepath.Join(dir, "prewarm-orchestrator")
	out, err := exec.Command("go", "build", "-o", bin, modulePath+"/cmd/prewarm-orchestrator").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building prewarm-orchestrator: %w: %s", err, out)
	}
	return bin, nil
}

// orchestratorBuild memoises one build per test binary: every test of a package runs the same one.
// The directory it builds into is buildDir, which removeOrchestratorBuild deletes once the
// package's tests are done.
var (
	buildDir          string
	orchestratorBuild = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "prewarm-e2e-bin-")
		if err != nil {
			return "", fmt.Errorf("creating a directory for the orchestrator binary: %w", err)
		}
		buildDir = dir
		return BuildOrchestrator(dir)
	})
)

// removeOrchestratorBuild deletes the binary orchestratorBuild built, if it built one.
func removeOrchestratorBuild() {
	if buildDir != "" {
		if err := os.RemoveAll(buildDir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: removing the orchestrator build: %v\n", err)
		}
	}
}

// OrchestratorBinary returns the path of cmd/prewarm-orchestrator, built once per test process.
func OrchestratorBinary(t testing.TB) string {
	t.Helper()
	bin, err := orchestratorBuild()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Tool returns the path of one of the pinned tools (hack/tools/versions.env), building it into the
// tools' cache first if it is not there, as hack/cluster.sh does for the cluster's binaries: not
// whatever version PATH holds.
func Tool(t testing.TB, name string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "hack", "tools", "install.sh"), name)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/tools/install.sh %s: %v", name, err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), name)
}

// UnreachableKubeconfig writes a kubeconfig whose API server (127.0.0.1:1) refuses every
// connection and returns its path.
func UnreachableKubeconfig(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: gone, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: gone, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

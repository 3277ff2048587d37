package framework

import (
	"fmt"
	"os/exec"
	"path/filepath"
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

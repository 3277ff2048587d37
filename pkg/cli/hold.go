package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func newHoldCommand(o *globalOptions) *cobra.Command {
	var copyTo string
	cmd := &cobra.Command{
		Use:   "hold",
		Short: "Wait for SIGTERM or SIGINT, then exit 0 (the warmer containers' process)",
		Long: `hold is a no-op process for the warmer DaemonSet's containers, so any image, including
distroless and scratch images with no shell, can serve as a warmer.

hold --copy-to PATH copies this binary to PATH (mode 0755) and exits: the warmer's init container
uses it to place the binary in a shared emptyDir, since the orchestrator image has no cp.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("copy-to") {
				if copyTo == "" {
					return &ConfigError{errors.New("--copy-to: needs a path, got an empty one")}
				}
				return copySelf(copyTo)
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&copyTo, "copy-to", "", "copy this binary to the given path and exit")
	return cmd
}

// copySelf copies the running executable to dst atomically (temp file, then rename).
func copySelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("opening %s: %w", self, err)
	}
	defer in.Close()
	// A copy cut short by SIGKILL (an init container killed mid-copy) is never renamed: remove
	// what earlier attempts left, or each restart would keep one more binary in the volume.
	dir := filepath.Dir(dst)
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".copy-") {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	tmp, err := os.CreateTemp(dir, ".copy-*")
	if err != nil {
		return fmt.Errorf("creating a file next to %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copying to %s: %w", dst, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("renaming to %s: %w", dst, err)
	}
	return nil
}

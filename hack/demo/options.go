package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/term"

	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// Options configure the demo. Defaults gives the values `make demo` uses.
type Options struct {
	// Root is the repository root (charts, hack scripts, values files, the orchestrator's sources).
	Root string
	// Cache is the tools cache of hack/tools/install.sh; the demo keeps its files under Cache/demo.
	Cache string
	// ClusterName is the name of the local cluster (hack/cluster.sh).
	ClusterName string
	// Namespace and Release of the chart installation.
	Namespace, Release string
	// Values is the chart values file, relative to Root unless absolute.
	Values string
	// PoolNodes and SystemNodes are the numbers of fake nodes in and outside the pool.
	PoolNodes, SystemNodes int
	// BatchSize is how many nodes the upgrade pipeline takes at once.
	BatchSize int
	// FromKernel is the kernel the nodes start on; they are upgraded onto the first of the
	// configuration's upgrade.kernelVersions.
	FromKernel string
	// Mode is how the orchestrator runs, as the chart's orchestrator.mode: ModeCronJob, a
	// `run --once` cycle every Cycle, or ModeDeployment, `run`, event-driven.
	Mode string
	// Cycle is the time between two orchestrator cycles (run --once).
	Cycle time.Duration
	// Drain is how long the pipeline waits between a batch's NodeMaintenance objects and its
	// first reboot; RebootGap separates two reboots of a batch.
	Drain, RebootGap time.Duration
	// Timeout bounds the scenario, from the first NodeMaintenance to the last release.
	Timeout time.Duration
	// TTY redraws the live view in place; otherwise progress is printed line by line.
	TTY bool
	// LDFlags are the -ldflags of the orchestrator's build.
	LDFlags string
}

// The orchestrator modes of the demo, named as the chart's orchestrator.mode values.
const (
	ModeCronJob    = "cronjob"
	ModeDeployment = "deployment"
)

// Defaults returns the options of `make demo`, with Root and Cache found from the environment.
func Defaults() (Options, error) {
	root, err := framework.RepoRoot()
	if err != nil {
		return Options{}, err
	}
	return Options{
		Root:        root,
		Cache:       toolsCache(),
		ClusterName: "image-prewarmer-demo",
		Namespace:   "image-prewarmer-demo",
		Release:     "image-prewarmer",
		Values:      "values-examples/demo.yaml",
		PoolNodes:   20,
		SystemNodes: 3,
		BatchSize:   5,
		FromKernel:  "6.5.0-demo",
		Mode:        ModeCronJob,
		Cycle:       2 * time.Second,
		Drain:       3 * time.Second,
		RebootGap:   time.Second,
		Timeout:     5 * time.Minute,
	}, nil
}

// Validate reports the first option that cannot work.
func (o Options) Validate() error {
	switch {
	case o.Root == "" || o.Cache == "":
		return errors.New("repository root and tools cache are required")
	case o.ClusterName == "" || o.Namespace == "" || o.Release == "" || o.Values == "":
		return errors.New("-cluster, -namespace, -release and -values must not be empty")
	case o.PoolNodes < 1 || o.PoolNodes > 99:
		return fmt.Errorf("-pool-nodes: must be between 1 and 99, got %d", o.PoolNodes)
	case o.SystemNodes < 0:
		return fmt.Errorf("-system-nodes: must not be negative, got %d", o.SystemNodes)
	case o.BatchSize < 1:
		return fmt.Errorf("-batch: must be positive, got %d", o.BatchSize)
	case o.FromKernel == "":
		return errors.New("-from-kernel must not be empty")
	case o.Mode != ModeCronJob && o.Mode != ModeDeployment:
		return fmt.Errorf("-mode: must be %s or %s, got %q", ModeCronJob, ModeDeployment, o.Mode)
	case o.Cycle <= 0 || o.Timeout <= 0 || o.Drain < 0 || o.RebootGap < 0:
		return errors.New("-cycle and -timeout must be positive, -drain and -reboot-gap not negative")
	}
	return nil
}

// StateDir holds the demo's files: the orchestrator binary, its config and logs, the helm log.
func (o Options) StateDir() string { return filepath.Join(o.Cache, "demo") }

// ValuesPath is the values file's absolute path.
func (o Options) ValuesPath() string {
	if filepath.IsAbs(o.Values) {
		return o.Values
	}
	return filepath.Join(o.Root, o.Values)
}

// run parses the command line and runs `up` or `down`.
func run(ctx context.Context, args []string, out *os.File) error {
	o, err := Defaults()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go run ./hack/demo [flags] up|down")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.ClusterName, "cluster", o.ClusterName, "local cluster name")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of the chart installation")
	fs.StringVar(&o.Release, "release", o.Release, "Helm release name")
	fs.StringVar(&o.Values, "values", o.Values, "chart values file")
	fs.IntVar(&o.PoolNodes, "pool-nodes", o.PoolNodes, "nodes in the notebook pool")
	fs.IntVar(&o.SystemNodes, "system-nodes", o.SystemNodes, "nodes outside the pool")
	fs.IntVar(&o.BatchSize, "batch", o.BatchSize, "nodes the upgrade pipeline takes at once")
	fs.StringVar(&o.FromKernel, "from-kernel", o.FromKernel, "kernel the nodes start on")
	fs.StringVar(&o.Mode, "mode", o.Mode, "how the orchestrator runs, as the chart's orchestrator.mode: cronjob (run --once every -cycle) or deployment (run, event-driven)")
	fs.DurationVar(&o.Cycle, "cycle", o.Cycle, "time between two orchestrator cycles (-mode cronjob)")
	fs.DurationVar(&o.Drain, "drain", o.Drain, "time from a batch's NodeMaintenance objects to its first reboot")
	fs.DurationVar(&o.RebootGap, "reboot-gap", o.RebootGap, "time between two reboots of a batch")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "bound of the scenario; exit 1 when it does not converge")
	fs.StringVar(&o.LDFlags, "ldflags", o.LDFlags, "-ldflags of the orchestrator's build (make demo passes make build's: version and commit)")
	plain := fs.Bool("plain", false, "print progress lines even on a terminal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.TTY = !*plain && term.IsTerminal(int(out.Fd())) && os.Getenv("TERM") != "dumb"
	if err := o.Validate(); err != nil {
		return err
	}
	switch fs.Arg(0) {
	case "up":
		return Up(ctx, o, out)
	case "down":
		return Down(ctx, o, out)
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", fs.Arg(0))
	}
}

// toolsCache is the cache directory of hack/tools/install.sh and hack/cluster.sh.
func toolsCache() string {
	if d := os.Getenv("IMAGE_PREWARMER_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "image-prewarmer")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "image-prewarmer")
}

// say prints one progress line of the set-up steps.
func say(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "[demo] "+format+"\n", args...)
}

package cli

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

func newRunCommand(o *globalOptions) *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Reconcile the pool: taint nodes in maintenance, release them once warm",
		Long: `run --once runs one reconcile cycle and exits (CronJob mode): exit 0 when the cycle completed
(nodes still waiting is normal), non-zero when it could not (API unreachable, invalid config, RBAC denied).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !once {
				return &ConfigError{errors.New("run: only --once (CronJob mode) is available in this version")}
			}
			e, log, err := o.newEngine(o.dryRun)
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := e.RunOnce(cmd.Context())
			if o.dryRun {
				if perr := printPlan(o.stdout, res.Plan); perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil {
				return fmt.Errorf("cycle failed: %w", err)
			}
			log.Info("cycle complete", summary(res, time.Since(start))...)
			return nil
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "run one cycle and exit (CronJob mode)")
	return cmd
}

func newCleanupCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Release every node this installation manages (taint, status label, annotations)",
		Long:  `cleanup is what the chart's pre-delete hook runs, so an uninstall never leaves a tainted node behind.`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, log, err := o.newEngine(o.dryRun)
			if err != nil {
				return err
			}
			res, err := e.Cleanup(cmd.Context())
			if o.dryRun {
				if perr := printPlan(o.stdout, res.Plan); perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil {
				return fmt.Errorf("cleanup failed: %w", err)
			}
			log.Info("cleanup complete", "released", res.Applied[plan.Release], "dryRun", o.dryRun)
			return nil
		},
	}
}

func summary(res engine.Result, took time.Duration) []any {
	return []any{
		"actions", len(res.Plan.Actions),
		"entered", res.Applied[plan.Enter],
		"adopted", res.Applied[plan.Adopt],
		"upgraded", res.Applied[plan.Upgraded],
		"released", res.Applied[plan.Release],
		"recorded", res.Applied[plan.Record],
		"duration", took.Round(time.Millisecond).String(),
	}
}

// printPlan writes the plan as a table; it is what --dry-run shows.
func printPlan(w io.Writer, p plan.Plan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "# dry run: %d action(s), nothing written\n", len(p.Actions))
	if len(p.Actions) > 0 {
		fmt.Fprintln(tw, "NODE\tACTION\tREASON\tMESSAGE")
	}
	for _, a := range p.Actions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Node, a.Type, a.Reason, a.Message)
	}
	for _, n := range p.Notes {
		node := n.Node
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(tw, "%s\tnote\t\t%s\n", node, n.Message)
	}
	return tw.Flush()
}

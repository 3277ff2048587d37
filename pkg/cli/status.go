package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

type statusOptions struct {
	output   string
	all      bool
	watch    bool
	interval time.Duration
}

func newStatusCommand(o *globalOptions) *cobra.Command {
	so := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the pool's managed nodes: phase, kernel, time in phase, warmer pod, last problem",
		Long: `status reads the pool (it never writes) and shows each node that is tainted, warming, joining
(carries the taint, adopted at the next cycle), waiting (in maintenance but not yet tainted: most
often no cycle has run since it entered maintenance, which in CronJob mode takes up to one schedule
period; otherwise the maxConcurrent budget is full, the warmer DaemonSet is missing, the
installation is being uninstalled, or the node reports neither a kernel nor a boot ID, so that its
upgrade could not be detected), deleting (being deleted, so neither adopted nor tainted),
released, or managed by another installation (foreign), with
totals. -o json or -o yaml for machines; --watch redraws in place on a terminal and prints one
block per interval when piped.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch so.output {
			case "table", "json", "yaml":
			default:
				return &ConfigError{fmt.Errorf("-o: %q is not table, json or yaml", so.output)}
			}
			switch {
			case cmd.Flags().Changed("interval") && !so.watch:
				return &ConfigError{fmt.Errorf("--interval: only with --watch")}
			case so.interval < minWatchInterval:
				return &ConfigError{fmt.Errorf("--interval: must be at least %s (each refresh reads the whole pool), got %s", minWatchInterval, so.interval)}
			}
			e, _, err := o.newEngine(true)
			if err != nil {
				return err
			}
			if !so.watch {
				return printStatusOnce(cmd.Context(), o.stdout, e, so)
			}
			return watchStatus(cmd.Context(), o.stdout, o.stderr, e, so)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&so.output, "output", "o", "table", "output format: table, json or yaml")
	f.BoolVar(&so.all, "all", false, "list every pool node, not only those with something to show")
	f.BoolVarP(&so.watch, "watch", "w", false, "keep refreshing until interrupted")
	f.DurationVar(&so.interval, "interval", 2*time.Second, "refresh interval with --watch (at least 1s)")
	return cmd
}

// minWatchInterval bounds how often --watch reads the pool: each refresh lists its nodes, the
// maintenance objects, the DaemonSet and the warmer pods.
const minWatchInterval = time.Second

func statusOf(ctx context.Context, e *engine.Engine, all bool) (plan.Status, error) {
	obs, err := e.Observe(ctx)
	if err != nil {
		return plan.Status{}, err
	}
	st := e.Planner().Describe(obs.Snapshot, all)
	for _, w := range obs.Warnings {
		st.SourceWarnings = append(st.SourceWarnings, plan.SourceWarning{Source: w.Source, Object: w.Object, Message: w.Message})
	}
	return st, nil
}

// maxSourceWarnings is how many maintenance source warnings the table shows: a source may skip
// hundreds of objects for one cause (a wrong maintenance.nodeMaintenance.nodeNameField).
const maxSourceWarnings = 5

func printStatusOnce(ctx context.Context, w io.Writer, e *engine.Engine, so *statusOptions) error {
	st, err := statusOf(ctx, e, so.all)
	if err != nil {
		return err
	}
	return renderStatus(w, st, so.output)
}

// watchStatus redraws the status every interval on a terminal; piped, it prints one block per
// interval: tables separated by a blank line, YAML documents by ---, JSON values one after the
// other. A failed read is a line on the table's output, and on stderr in the machine formats, so
// that their stream stays readable.
func watchStatus(ctx context.Context, w, errw io.Writer, e *engine.Engine, so *statusOptions) error {
	f, isFile := w.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	ticker := time.NewTicker(so.interval)
	defer ticker.Stop()
	for {
		st, err := statusOf(ctx, e, so.all)
		if ctx.Err() != nil {
			return nil
		}
		var buf strings.Builder
		switch {
		case err != nil && so.output != "table" && !tty:
			fmt.Fprintf(errw, "%s  error: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		case err != nil:
			fmt.Fprintf(&buf, "%s  error: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		default:
			if so.output == "yaml" && !tty {
				buf.WriteString("---\n")
			}
			if rerr := renderStatus(&buf, st, so.output); rerr != nil {
				return rerr
			}
		}
		if tty {
			// Home the cursor, draw, clear what the previous frame left below.
			fmt.Fprint(w, "\x1b[H\x1b[2J"+buf.String())
		} else {
			fmt.Fprint(w, buf.String())
			if so.output == "table" {
				fmt.Fprintln(w)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// totalKeys are the totals every output shows, 0 included, in the table's order.
var totalKeys = []string{"pool", "inMaintenance", "joining", "waiting", "tainted", "warming", "released", "foreign"}

// machineShape returns st with the shape -o json and -o yaml promise whatever the pool holds:
// nodes a list (never null) and every total of totalKeys present.
func machineShape(st plan.Status) plan.Status {
	if st.Nodes == nil {
		st.Nodes = []plan.NodeStatus{}
	}
	totals := make(map[string]int, len(st.Totals)+len(totalKeys))
	for _, k := range totalKeys {
		totals[k] = 0
	}
	for k, v := range st.Totals {
		totals[k] = v
	}
	st.Totals = totals
	return st
}

func renderStatus(w io.Writer, st plan.Status, output string) error {
	if output != "table" {
		st = machineShape(st)
	}
	switch output {
	case "json":
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(st)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	fmt.Fprintf(w, "%s  %s  %s\n", st.Time.UTC().Format(time.RFC3339), st.Instance, totalsLine(st.Totals))
	if st.Uninstalling != "" {
		fmt.Fprintf(w, "UNINSTALLING since %s: no node is tainted or adopted (the warmer DaemonSet carries %s)\n",
			oneLine(st.Uninstalling, 80), state.Uninstalling)
	}
	switch {
	case st.WarmerDeleting:
		fmt.Fprintf(w, "WARMER MISSING: DaemonSet %s is being deleted: no node is tainted for maintenance until it exists again\n", st.WarmerMissing)
	case st.WarmerMissing != "":
		fmt.Fprintf(w, "WARMER MISSING: DaemonSet %s not found: no node is tainted for maintenance until it exists\n", st.WarmerMissing)
	}
	if st.EmptyPool != "" {
		fmt.Fprintf(w, "EMPTY POOL: no node matches the pool selector %s: nothing to pre-warm until one does\n", st.EmptyPool)
	}
	for i, sw := range st.SourceWarnings {
		if i == maxSourceWarnings {
			fmt.Fprintf(w, "MAINTENANCE SOURCE: %d more warnings (-o json lists every one)\n", len(st.SourceWarnings)-i)
			break
		}
		about := sw.Source
		if sw.Object != "" {
			about += " " + oneLine(sw.Object, 80)
		}
		fmt.Fprintf(w, "MAINTENANCE SOURCE %s: %s\n", about, oneLine(sw.Message, 400))
	}
	if len(st.Problems) > 0 {
		reasons := slices.Sorted(maps.Keys(st.Problems))
		parts := make([]string, len(reasons))
		for i, r := range reasons {
			parts[i] = fmt.Sprintf("%s=%d", r, st.Problems[r])
		}
		fmt.Fprintf(w, "PROBLEMS on managed nodes (LAST PROBLEM below; the image_prewarmer_node_problems gauge): %s\n", strings.Join(parts, " "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPHASE\tIN PHASE\tKERNEL\tWARMER\tMAINTENANCE\tLAST PROBLEM")
	for _, n := range st.Nodes {
		phase := n.Phase
		if phase == "released" && n.ReleaseReason != "" {
			phase += " (" + n.ReleaseReason + ")"
		}
		if phase == "" {
			phase = "-"
		}
		if n.Owner != "" {
			phase += " (" + n.Owner + ")" // whose: its LAST PROBLEM is that installation's
		}
		if !n.InPool && (n.Phase == state.PhaseTainted || n.Phase == state.PhaseWarming) {
			// No longer matches the pool selector: the next cycle releases it (left-pool).
			phase += " (left pool)"
		}
		if n.TaintRemoved {
			// Open already: the next cycle releases it (external).
			phase += " (taint removed)"
		}
		kernel := n.Kernel
		if n.BaselineKernel != "" && n.BaselineKernel != n.Kernel {
			kernel = n.BaselineKernel + " -> " + n.Kernel
		}
		// Every cell but the node's name and age holds text from annotations, labels or the
		// node's status: one line each, so that the columns stay and no escape reaches a terminal.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, oneLine(phase, 80), age(st.Time, n.Since), orDash(oneLine(kernel, 80)),
			oneLine(n.Warmer, 80), orDash(oneLine(n.Maintenance, 80)), orDash(oneLine(n.LastProblem, 80)))
	}
	return tw.Flush()
}

// totalsLine renders the totals in a fixed order, then any others alphabetically.
func totalsLine(t map[string]int) string {
	var parts []string
	seen := map[string]bool{}
	for _, k := range totalKeys {
		seen[k] = true
		parts = append(parts, fmt.Sprintf("%s=%d", k, t[k]))
	}
	var rest []string
	for k := range t {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		parts = append(parts, fmt.Sprintf("%s=%d", k, t[k]))
	}
	return strings.Join(parts, " ")
}

func age(now, since time.Time) string {
	if since.IsZero() {
		return "-"
	}
	d := now.Sub(since).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine returns s on one line, its control characters (newlines, tabs that would break the
// table's columns, terminal escapes) as spaces, cut to n bytes (with "...") at a character boundary.
func oneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

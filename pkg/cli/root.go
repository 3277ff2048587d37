// Package cli is the prewarm-orchestrator command tree.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/ratelimit"
	"github.com/image-prewarmer/image-prewarmer/pkg/version"
)

// Exit codes.
const (
	ExitFailure = 1 // the command could not do its job (API unreachable, RBAC denied, ...)
	ExitConfig  = 2 // invalid configuration or usage
)

// ConfigError marks an error in the configuration or the command line.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// ExitCode maps an error returned by the command tree to a process exit code.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return ExitConfig
	}
	return ExitFailure
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	configPath string
	// configFlag is the --config flag: whether it was given (Changed).
	configFlag *pflag.Flag
	kubeconfig string
	// kubeconfigFlag is the --kubeconfig flag: given empty, it is refused rather than read as
	// absent (a script's unset variable would act on whatever cluster the fallbacks find).
	kubeconfigFlag *pflag.Flag
	dryRun         bool
	logFormat      string
	verbosity      int
	stdout         io.Writer
	stderr         io.Writer
	// withoutRule loads the configuration with config.LoadWithoutRule: for cleanup, which never
	// evaluates the upgrade rule.
	withoutRule bool
	// checkConfig, when set, checks the loaded configuration against the command's flags, before
	// anything connects; its error is a ConfigError.
	checkConfig func(*config.Config) error
}

// Main runs the command tree with args and returns the process's exit code (ExitCode). A
// failure is reported on stderr in the --log-format: text, one line "prewarm-orchestrator: ERROR";
// json, a log line at level ERROR with the error and the exit code, which a log pipeline reads
// like every other line of the run.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root, o := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		if f := logFormatArg(args); f != "" {
			// Parsing stops at a bad flag: a --log-format after it was not read.
			o.logFormat = f
		}
		o.reportError(err)
	}
	return ExitCode(err)
}

// logFormatArg returns the last --log-format value in args, read past flags cobra does not know
// (of any command) and up to a "--"; "" if there is none. An unknown flag followed by a word
// takes it as its value, as most of the commands' flags would: the word is not a --log-format.
func logFormatArg(args []string) string {
	fs := pflag.NewFlagSet("log-format", pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.SetOutput(io.Discard)
	f := fs.String("log-format", "", "")
	_ = fs.Parse(args) // anything else wrong was reported by the command's own parse
	return *f
}

// reportError writes the error a command returned, in the --log-format.
func (o *globalOptions) reportError(err error) {
	if o.logFormat == "json" {
		slog.New(slog.NewJSONHandler(o.stderr, nil)).Error("prewarm-orchestrator failed", "error", err.Error(), "exitCode", ExitCode(err))
		return
	}
	fmt.Fprintln(o.stderr, "prewarm-orchestrator: "+err.Error())
}

// NewRootCommand builds the command tree writing to stdout and stderr.
func NewRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root, _ := newRootCommand(stdout, stderr)
	return root
}

func newRootCommand(stdout, stderr io.Writer) (*cobra.Command, *globalOptions) {
	o := &globalOptions{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "prewarm-orchestrator",
		Short: "Keep upgraded nodes closed to user pods until their base images are on disk",
		Long: `prewarm-orchestrator taints the pool nodes that are about to be OS-upgraded, waits until the
warmer DaemonSet's pod is Ready on each upgraded node (the kubelet pulled the images), then removes
the taint. State lives on the nodes as annotations under image-prewarmer.io/.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// cobra's default, which SuggestionsFor does not apply by itself.
		SuggestionsMinimumDistance: 2,
		// Without a command, the help. An unknown command is a usage error (exit 2): cobra's own
		// check returns a plain error (exit 1).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
			}
			return &ConfigError{errors.New(msg)}
		},
		// Flags without a command are a usage error, not the help and exit 0: a container whose
		// arguments lost their command would otherwise "succeed" at every run.
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().NFlag() > 0 {
				return &ConfigError{errors.New("no command given: flags need one of run, status, cleanup, hold or version (see --help)")}
			}
			return cmd.Help()
		},
		// Checked for every command, including those that log nothing of their own (hold,
		// version): a bad value is refused wherever it is given.
		PersistentPreRunE: func(*cobra.Command, []string) error { return o.checkLogFlags() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ConfigError{err} })
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&o.configPath, "config", config.DefaultPath, "path of the OrchestratorConfig file")
	o.configFlag = pf.Lookup("config")
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "path of a kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)")
	o.kubeconfigFlag = pf.Lookup("kubeconfig")
	pf.BoolVar(&o.dryRun, "dry-run", false, "compute the plan and write nothing: run --once and cleanup print it, the event-driven run logs it")
	pf.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	pf.IntVarP(&o.verbosity, "v", "v", 0, "log verbosity: 0 info, 1 debug, 2 or more adds client-go's debug logs (its -v N-1)")

	root.AddCommand(
		newRunCommand(o),
		withoutGlobalFlagsInHelp(newStatusCommand(o), "dry-run"),
		newCleanupCommand(o),
		withoutGlobalFlagsInHelp(newHoldCommand(o)),
		withoutGlobalFlagsInHelp(newVersionCommand(o)),
	)
	return root, o
}

// withoutGlobalFlagsInHelp leaves the root's flags named (all of them if none is: configuration,
// cluster, dry run, logging) out of cmd's help: cmd reads none of them. They are still accepted.
func withoutGlobalFlagsInHelp(cmd *cobra.Command, names ...string) *cobra.Command {
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		c.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
			if len(names) == 0 || slices.Contains(names, f.Name) {
				f.Hidden = true
			}
		})
		c.Root().HelpFunc()(c, args)
	})
	return cmd
}

// noArgs is cobra.NoArgs as a usage error (exit 2). A word that is the name of one of the
// command's flags (run once) is most likely that flag without its dashes: the error says so.
func noArgs(cmd *cobra.Command, args []string) error {
	err := cobra.NoArgs(cmd, args)
	if err == nil {
		return nil
	}
	if f := cmd.Flags().Lookup(args[0]); f != nil {
		err = fmt.Errorf("%w (did you mean --%s?)", err, f.Name)
	}
	return &ConfigError{err}
}

// checkLogFlags refuses a --log-format or -v the logger cannot take.
func (o *globalOptions) checkLogFlags() error {
	if o.logFormat != "text" && o.logFormat != "json" {
		return &ConfigError{fmt.Errorf("--log-format: %q is not text or json", o.logFormat)}
	}
	if o.verbosity < 0 {
		return &ConfigError{fmt.Errorf("-v: must be 0 or more, got %d", o.verbosity)}
	}
	return nil
}

// logger builds the process logger from the flags. Only the command layer configures logging.
func (o *globalOptions) logger() (*slog.Logger, error) {
	level := slog.LevelInfo
	if o.verbosity > 0 {
		level = slog.LevelDebug
	}
	var handler func(slog.Leveler) slog.Handler
	switch o.logFormat {
	case "text":
		handler = func(l slog.Leveler) slog.Handler {
			return slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: l})
		}
	case "json":
		handler = func(l slog.Leveler) slog.Handler {
			return slog.NewJSONHandler(o.stderr, &slog.HandlerOptions{Level: l})
		}
	default:
		return nil, o.checkLogFlags()
	}
	// client-go (leader election, informers) logs through klog: same format, same stream. -v 1
	// is this program's debug log only, and each level above adds one of client-go's (-v 2: its
	// V(1), such as every feature gate's state at start-up; -v 7: its V(6), every request). Its
	// contextual V(n) messages arrive at slog level -n; its global klog.V(n) calls are checked
	// against klog's own verbosity first, set here to match.
	klog.SetSlogLogger(slog.New(handler(clientGoLevel(o.verbosity))))
	flags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(flags)
	if err := flags.Set("v", strconv.Itoa(max(o.verbosity-1, 0))); err != nil {
		return nil, fmt.Errorf("setting client-go's log verbosity: %w", err)
	}
	return slog.New(handler(level)), nil
}

// clientGoLevel is the lowest slog level of client-go's messages logged at verbosity v: its
// errors, warnings and infos always, its V(n) from v = n+1.
func clientGoLevel(v int) slog.Level {
	if v <= 1 {
		return slog.LevelInfo
	}
	return slog.Level(1 - v)
}

// loadConfig reads and validates the configuration file (without the upgrade rule with
// withoutRule, saying so on log when it leaves one out). Without --config, a missing file at the
// default path (where the chart's pods mount it) most likely means a run outside the chart's pods:
// the error then says to pass --config, and how to save the installation's file.
func (o *globalOptions) loadConfig(log *slog.Logger) (*config.Config, error) {
	if o.configPath == "" {
		return nil, &ConfigError{errors.New("--config: needs a path, got an empty one")}
	}
	var cfg *config.Config
	var err error
	if o.withoutRule {
		var dropped error
		cfg, dropped, err = config.LoadWithoutRule(o.configPath)
		if dropped != nil {
			log.Warn("configuration refused by run and status, used without its upgrade rule, which this command does not evaluate: "+dropped.Error(), "config", o.configPath)
		}
	} else {
		cfg, err = config.Load(o.configPath)
	}
	if errors.Is(err, fs.ErrNotExist) && !o.configFlag.Changed {
		err = fmt.Errorf("%w\nno --config given: %s is where the chart's pods mount the configuration; "+
			"elsewhere, pass the installation's config.yaml with --config, saved from the chart's ConfigMap (before an uninstall, which deletes it): %s",
			err, o.configPath, config.SaveCommand)
	}
	if err != nil {
		return nil, &ConfigError{err}
	}
	return cfg, nil
}

// restConfig resolves the cluster: --kubeconfig, then $KUBECONFIG, then in-cluster, then
// ~/.kube/config, with the client settings of the mode (eventDriven or one-shot).
func (o *globalOptions) restConfig(cfg *config.Config, eventDriven bool) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	switch {
	case o.kubeconfig == "" && o.kubeconfigFlag.Changed:
		return nil, &ConfigError{errors.New("--kubeconfig: needs a path, got an empty one (leave the flag out for $KUBECONFIG, in-cluster, then ~/.kube/config)")}
	case o.kubeconfig != "":
		if _, serr := os.Stat(o.kubeconfig); errors.Is(serr, fs.ErrNotExist) {
			return nil, &ConfigError{fmt.Errorf("loading cluster credentials: --kubeconfig: no such file: %s", o.kubeconfig)}
		}
		rc, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	case os.Getenv("KUBECONFIG") != "":
		if err := kubeconfigEnvExists(os.Getenv("KUBECONFIG")); err != nil {
			return nil, &ConfigError{fmt.Errorf("loading cluster credentials: %w", err)}
		}
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	default:
		rc, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		}
	}
	if clientcmd.IsEmptyConfig(err) {
		// client-go's message points at a variable nothing reads any more (KUBERNETES_MASTER).
		err = o.emptyConfig()
	}
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("loading cluster credentials: %w", err)}
	}
	rc.QPS = cfg.Client.QPSFor(eventDriven)
	rc.Burst = cfg.Client.Burst
	rc.Timeout = cfg.Client.Timeout.Duration
	rc.UserAgent = "prewarm-orchestrator/" + version.Version
	return rc, nil
}

// emptyConfig says why the kubeconfig found names no cluster: there is none (no file, or files
// without clusters, users and contexts), or it has no current context (or that context's cluster
// has no server), which client-go reports the same way.
func (o *globalOptions) emptyConfig() error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.MigrationRules = nil // reading, not moving files about: an error message is being written
	source := "~/.kube/config"
	switch env := os.Getenv("KUBECONFIG"); {
	case o.kubeconfig != "":
		rules.ExplicitPath, source = o.kubeconfig, "--kubeconfig "+o.kubeconfig
	case env != "":
		source = "$KUBECONFIG (" + env + ")"
	}
	raw, err := rules.Load()
	switch {
	case err == nil && !clientcmdapi.IsConfigEmpty(raw):
		return fmt.Errorf("%s: no current-context, or its cluster has no server", source)
	case o.kubeconfig == "" && os.Getenv("KUBECONFIG") == "" && !fileExists(clientcmd.RecommendedHomeFile):
		return errors.New("none found: not running in a cluster, and no --kubeconfig, $KUBECONFIG or ~/.kube/config")
	default:
		return fmt.Errorf("%s: no cluster, user or context in it", source)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// kubeconfigEnvExists refuses a $KUBECONFIG none of whose files exists. client-go merges the
// files of the list that exist and skips the others without a word, so with none left its error
// ("no configuration has been provided") would not name the path that is wrong.
func kubeconfigEnvExists(env string) error {
	var missing []string
	for _, path := range filepath.SplitList(env) {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
			return nil // client-go reads it, or says what is wrong with it
		}
		missing = append(missing, path)
	}
	if len(missing) == 0 {
		return fmt.Errorf("$KUBECONFIG (%q) names no file", env)
	}
	if len(missing) == 1 {
		return fmt.Errorf("$KUBECONFIG: no such file: %s", missing[0])
	}
	return fmt.Errorf("$KUBECONFIG: none of these files exists: %s", strings.Join(missing, ", "))
}

// newEngine wires an engine from the flags and configuration.
func (o *globalOptions) newEngine(dryRun bool) (*engine.Engine, *slog.Logger, error) {
	w, err := o.wire(dryRun, nil, false)
	if err != nil {
		return nil, nil, err
	}
	return w.engine, w.log, nil
}

// wiring is what the commands are built from.
type wiring struct {
	log *slog.Logger
	// rest is the configuration the clients were built from (without a rate limiter: a client
	// built from it gets a limiter of its own).
	rest   *rest.Config
	cfg    *config.Config
	client kubernetes.Interface
	// watches is the informers' client: own rate limiter, own connection, watches not cut by
	// client.timeout (forWatches).
	watches kubernetes.Interface
	// dynamic reads the nodeMaintenance resource for the engine (nil when that source is off).
	dynamic dynamic.Interface
	// watchDynamic is the nodeMaintenance informer's client, as watches is the others'
	// (event-driven mode with that source on; nil otherwise).
	watchDynamic dynamic.Interface
	engine       *engine.Engine
}

// wire loads the configuration and builds the clients and the engine. With m, API errors and
// transitions are recorded there. eventDriven selects the mode's client-side rate limit when
// client.qps is unset (config.Client.QPSFor) and keeps half the limiter's burst for releases,
// which arrive one by one while other writes are paced (a one-shot cycle writes its releases first).
func (o *globalOptions) wire(dryRun bool, m *metrics.Metrics, eventDriven bool) (*wiring, error) {
	log, err := o.logger()
	if err != nil {
		return nil, err
	}
	cfg, err := o.loadConfig(log)
	if err != nil {
		return nil, err
	}
	if o.checkConfig != nil {
		if err := o.checkConfig(cfg); err != nil {
			return nil, &ConfigError{err}
		}
	}
	rc, err := o.restConfig(cfg, eventDriven)
	if err != nil {
		return nil, err
	}
	if m != nil {
		rc.Wrap(m.WrapTransport)
	}
	rc.Wrap((&clockSkew{log: log, now: time.Now}).wrap)
	var dyn, watchDyn dynamic.Interface
	if cfg.Maintenance.NodeMaintenance.Enabled {
		// Custom resources are JSON only.
		if dyn, err = dynamic.NewForConfig(rest.CopyConfig(rc)); err != nil {
			return nil, fmt.Errorf("creating dynamic client: %w", err)
		}
		if eventDriven {
			if watchDyn, err = dynamic.NewForConfig(forWatches(rc)); err != nil {
				return nil, fmt.Errorf("creating dynamic watch client: %w", err)
			}
		}
	}
	// Built-in types in protobuf: smaller responses, and decoding a 5,000-node list allocates far less.
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// The main client's rate limiter serves node releases (urgent: a user waits for the node)
	// before any other waiting request; same qps and burst as client-go's own limiter.
	reserve := 0
	if eventDriven {
		reserve = cfg.Client.Burst / 2
	}
	main := ownConnection(rc)
	if qps := cfg.Client.QPSFor(eventDriven); qps != -1 {
		main.RateLimiter = ratelimit.New(qps, cfg.Client.Burst, reserve)
	}
	client, err := kubernetes.NewForConfig(main)
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	// Events get a client (and so a rate limiter and a connection) of their own: they never
	// delay a node's write.
	events, err := kubernetes.NewForConfig(ownConnection(rc))
	if err != nil {
		return nil, fmt.Errorf("creating events client: %w", err)
	}
	// So do the informers' lists and watches (event-driven mode).
	watches, err := kubernetes.NewForConfig(forWatches(rc))
	if err != nil {
		return nil, fmt.Errorf("creating watch client: %w", err)
	}
	workers := engine.DefaultWorkers
	if eventDriven {
		workers = engine.EventDrivenWorkers
	}
	e, err := engine.New(engine.Options{
		Config: cfg, Client: client, Dynamic: dyn, Logger: log, DryRun: dryRun, Reporter: reporter(), Metrics: m,
		EventClient: events, Workers: workers,
	})
	if err != nil {
		return nil, &ConfigError{err}
	}
	return &wiring{log: log, rest: rc, cfg: cfg, client: client, watches: watches, dynamic: dyn, watchDynamic: watchDyn, engine: e}, nil
}

// ownConnection returns a copy of rc whose clients get a connection of their own. client-go
// shares one transport, and so one HTTP/2 connection, between all clients built from equal
// configurations; a dialer of its own makes the configuration unique. On a shared connection a
// node release would queue behind the watch streams' backlog and the Events when the API server
// is busiest (a thousand nodes joining at once).
func ownConnection(rc *rest.Config) *rest.Config {
	c := rest.CopyConfig(rc)
	c.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return c
}

// forWatches returns a copy of rc for the informers' clients: a connection of their own
// (ownConnection), and client.timeout on every request but the watches. rc.Timeout is an
// http.Client timeout, which also ends a watch after client.timeout: every informer would re-open
// its watch that often (with client-go's "unable to cancel request" in the log each time). A watch
// is bounded already: the reflector asks the API server to end it after 5 to 10 minutes
// (timeoutSeconds) and opens the next.
func forWatches(rc *rest.Config) *rest.Config {
	c := ownConnection(rc)
	if d := c.Timeout; d > 0 {
		c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &timeoutExceptWatches{rt: rt, timeout: d} })
		c.Timeout = 0
	}
	return c
}

// timeoutExceptWatches bounds each request but a watch as an http.Client timeout would: from
// sending the request until its response body is closed.
type timeoutExceptWatches struct {
	rt      http.RoundTripper
	timeout time.Duration
}

func (t *timeoutExceptWatches) RoundTrip(req *http.Request) (*http.Response, error) {
	if isWatch(req) {
		return t.rt.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// WrappedRoundTripper lets client-go's utilities (k8s.io/apimachinery/pkg/util/net) reach the
// transport underneath.
func (t *timeoutExceptWatches) WrappedRoundTripper() http.RoundTripper { return t.rt }

// isWatch reports whether req is a watch as the API server reads it: a watch parameter other
// than false or 0.
func isWatch(req *http.Request) bool {
	v, ok := req.URL.Query()["watch"]
	if !ok || len(v) == 0 {
		return false
	}
	switch strings.ToLower(v[0]) {
	case "false", "0":
		return false
	}
	return true
}

// cancelOnClose ends a request's context when its response body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// reporter names this process in Events: the pod name when running in a pod.
func reporter() string {
	for _, k := range []string{"POD_NAME", "HOSTNAME"} {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			return v
		}
	}
	return "prewarm-orchestrator"
}

func newVersionCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(o.stdout, "prewarm-orchestrator "+version.String())
			return err
		},
	}
}

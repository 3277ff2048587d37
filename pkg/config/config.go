// Package config defines the orchestrator's configuration file (kind OrchestratorConfig), its
// defaults, strict decoding and validation with field paths.
//
// The Helm chart renders this file from its values; the orchestrator reads it at start-up and
// refuses to start when it is invalid, naming the offending field.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/pkg/upgrade"
	"sigs.k8s.io/yaml"
)

const (
	// APIVersion is the only configuration version this binary reads.
	APIVersion = "image-prewarmer.io/v1alpha1"
	// Kind is the configuration file's kind.
	Kind = "OrchestratorConfig"
	// DefaultPath is where the chart mounts the configuration.
	DefaultPath = "/etc/image-prewarmer/config.yaml"
	// SaveCommand saves an installation's configuration from the chart's ConfigMap into
	// config.yaml, for hints; the command is the one docs/operations.md gives.
	SaveCommand = `kubectl -n image-prewarmer get configmap prewarm-image-prewarmer -o jsonpath='{.data.config\.yaml}' > config.yaml ` +
		"(release prewarm in namespace image-prewarmer: substitute yours)"
)

// OnWarmTimeout says what happens to a node whose warmer pod is not Ready within maxWaitForWarm.
type OnWarmTimeout string

const (
	// OnWarmTimeoutRelease releases the node (fail-open) with a Warning Event.
	OnWarmTimeoutRelease OnWarmTimeout = "release"
	// OnWarmTimeoutKeep keeps the node tainted (fail-closed) with a Warning Event.
	OnWarmTimeoutKeep OnWarmTimeout = "keep"
)

// Config is the orchestrator's configuration file.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// Instance identifies this installation on the nodes it manages (annotation
	// image-prewarmer.io/owner). The chart sets <namespace>/<release>. Defaults to
	// <warmer.namespace>/<warmer.daemonSetName>.
	Instance string `json:"instance,omitempty"`

	Pool        Pool        `json:"pool"`
	Taint       Taint       `json:"taint"`
	StatusLabel StatusLabel `json:"statusLabel"`
	Upgrade     Upgrade     `json:"upgrade"`
	Maintenance Maintenance `json:"maintenance"`
	Warmer      Warmer      `json:"warmer"`

	// MaxConcurrent caps the nodes in phase tainted or warming: an integer or a percentage of
	// the pool from "1%" to "100%". 0 means no limit ("0%" is refused: it reads as "none").
	MaxConcurrent intstr.IntOrString `json:"maxConcurrent"`
	// CancelAfter is how long a tainted, not yet upgraded node may be out of the maintenance set
	// before it is released (reason cancelled).
	CancelAfter Duration `json:"cancelAfter"`
	// MaxWaitForUpgrade is how long a node may stay tainted without its upgrade being seen.
	MaxWaitForUpgrade Duration `json:"maxWaitForUpgrade"`
	// MaxWaitForWarm is how long a node may stay warming without a Ready warmer pod.
	MaxWaitForWarm Duration `json:"maxWaitForWarm"`
	// OnWarmTimeout is release (default) or keep.
	OnWarmTimeout OnWarmTimeout `json:"onWarmTimeout"`

	Events Events `json:"events"`
	Client Client `json:"client"`
}

// Pool selects the nodes this installation manages.
type Pool struct {
	// NodeSelector is a set of labels every pool node carries. Required, non-empty.
	NodeSelector map[string]string `json:"nodeSelector"`
}

// Taint is the taint added to nodes in maintenance and removed once they are warm.
type Taint struct {
	Key    string             `json:"key"`
	Value  string             `json:"value"`
	Effect corev1.TaintEffect `json:"effect"`
}

// StatusLabel is the label that tells the warmer DaemonSet where it may run.
type StatusLabel struct {
	Key string `json:"key"`
	// Value is set while the node waits for its upgrade (phase tainted).
	Value string `json:"value"`
	// WarmingValue is set once the upgrade is seen (phase warming).
	WarmingValue string `json:"warmingValue"`
}

// Upgrade says how an upgraded node is recognised.
type Upgrade struct {
	// KernelVersions, when set, are the target kernels: a node is upgraded when its kernel is
	// one of them. Otherwise a node is upgraded when its kernel or boot ID changed.
	KernelVersions []string `json:"kernelVersions,omitempty"`
	// KernelVersionLabel is a node label holding the kernel version; when empty or absent on a
	// node, status.nodeInfo.kernelVersion is used.
	KernelVersionLabel string `json:"kernelVersionLabel,omitempty"`
	// When is a Go template (with sprig functions) that renders "true" or "false"; it replaces
	// the default rule. See pkg/upgrade for the data it receives.
	When string `json:"when,omitempty"`
}

// Maintenance lists the sources of "this node is about to be upgraded". The set is their union.
type Maintenance struct {
	NodeMaintenance NodeMaintenanceSource `json:"nodeMaintenance"`
	NodeLabel       NodeLabelSource       `json:"nodeLabel"`
	Cordoned        CordonedSource        `json:"cordoned"`
}

// NodeMaintenanceSource reads objects of a resource that name a node (medik8s NodeMaintenance
// by default). An object that exists is an active maintenance; its UID is the maintenance's identity.
type NodeMaintenanceSource struct {
	Enabled  bool   `json:"enabled"`
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
	// Namespace restricts a namespaced resource to one namespace; empty means all namespaces
	// (and is required for cluster-scoped resources).
	Namespace string `json:"namespace,omitempty"`
	// NodeNameField is the dotted path of the node name in each object.
	NodeNameField string `json:"nodeNameField"`
}

// NodeLabelSource treats pool nodes matching a label selector as in maintenance.
type NodeLabelSource struct {
	Enabled bool `json:"enabled"`
	// Selector is a label selector in kubectl syntax, e.g. "upgrade.example.com/pending=true".
	Selector string `json:"selector,omitempty"`
}

// CordonedSource treats cordoned pool nodes (spec.unschedulable) as in maintenance.
type CordonedSource struct {
	Enabled bool `json:"enabled"`
}

// Warmer names the warmer DaemonSet whose pods prove a node warm.
type Warmer struct {
	Namespace     string `json:"namespace"`
	DaemonSetName string `json:"daemonSetName"`
}

// Events configures the Kubernetes Events the orchestrator emits about nodes.
type Events struct {
	// Namespace holds Events about nodes. Only "default": the API server accepts Events about a
	// cluster-scoped object in no other namespace (kube-system only for events.k8s.io Events).
	// Each Event names the installation that wrote it in its image-prewarmer.io/owner annotation.
	Namespace string `json:"namespace"`
	// Transitions also records a Normal Event for every routine transition (tainted, adopted,
	// upgrade seen, released warm, cancelled, left the pool, cleaned up): one more API write per
	// node that changes. Off by default, so that a cycle costs its list calls plus one patch per
	// changed node. Warnings (timeouts, pull problems) and the release of a node whose taint
	// someone else removed are always recorded.
	Transitions bool `json:"transitions"`
}

// Client tunes the Kubernetes client.
type Client struct {
	// QPS and Burst are the client-side rate limit of node writes and lists; QPS -1 turns it off
	// (client-go's convention), leaving API Priority and Fairness and the write slots (16
	// entries or adoptions, 16 other transitions and 16 releases at once, 8 of each in the
	// event-driven mode) to bound the load. Unset, QPS depends on the mode: see QPSFor.
	QPS     *float32 `json:"qps,omitempty"`
	Burst   int      `json:"burst"`
	Timeout Duration `json:"timeout"`
}

// EventDrivenQPS is the client-side rate limit of the event-driven mode when client.qps is unset.
const EventDrivenQPS = 50

// QPSFor returns the client-side rate limit of a mode: client.qps when it is set; otherwise
// EventDrivenQPS in the event-driven mode and -1 (none) for the one-shot commands. In the
// event-driven mode the limiter is what lets a release (a user waits for the node) overtake a
// burst of adoptions and entries: it serves releases first and keeps half its burst for them,
// and the writes it paces leave the API server's time to the releases. A one-shot cycle writes
// its releases before anything else, so there the limit would only make a large cycle slower
// (500 entries take 10 s at 50 QPS).
func (c Client) QPSFor(eventDriven bool) float32 {
	switch {
	case c.QPS != nil:
		return *c.QPS
	case eventDriven:
		return EventDrivenQPS
	default:
		return -1
	}
}

// Default returns the configuration with every default set and no pool (which must be given).
func Default() *Config {
	return &Config{
		APIVersion: APIVersion,
		Kind:       Kind,
		Taint:      Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		StatusLabel: StatusLabel{
			Key:          "os-upgrade/status",
			Value:        "upgrading",
			WarmingValue: "warming",
		},
		Maintenance: Maintenance{
			NodeMaintenance: NodeMaintenanceSource{
				Enabled:       true,
				Group:         "nodemaintenance.medik8s.io",
				Version:       "v1beta1",
				Resource:      "nodemaintenances",
				NodeNameField: "spec.nodeName",
			},
		},
		Warmer:            Warmer{Namespace: "image-prewarmer", DaemonSetName: "image-prewarmer-warmer"},
		MaxConcurrent:     intstr.FromInt32(0),
		CancelAfter:       NewDuration(15 * time.Minute),
		MaxWaitForUpgrade: NewDuration(24 * time.Hour),
		MaxWaitForWarm:    NewDuration(2 * time.Hour),
		OnWarmTimeout:     OnWarmTimeoutRelease,
		Events:            Events{Namespace: "default"},
		Client:            Client{Burst: 100, Timeout: NewDuration(30 * time.Second)},
	}
}

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	cfg, _, err := load(path, false)
	return cfg, err
}

// LoadWithoutRule is Load for a command that never evaluates the upgrade rule (cleanup): an
// upgrade.when template that Load would refuse is left out of the configuration instead, and
// returned as dropped. A rule that broke after nodes were tainted (a helm upgrade whose template
// fails on the sample node) must not keep them tainted, nor block the uninstall whose hook
// releases them.
func LoadWithoutRule(path string) (cfg *Config, dropped, err error) {
	return load(path, true)
}

func load(path string, withoutRule bool) (*Config, error, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, dropped, err := parse(data, withoutRule)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, dropped, nil
}

// Parse decodes a configuration strictly over the defaults and validates it. An unknown or
// duplicated field is an error that names it; so is a value of the wrong type, shown as written.
func Parse(data []byte) (*Config, error) {
	cfg, _, err := parse(data, false)
	return cfg, err
}

func parse(data []byte, withoutRule bool) (*Config, error, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil, fmt.Errorf("empty configuration: apiVersion %s, kind %s and pool.nodeSelector are required", APIVersion, Kind)
	}
	if err := singleDocument(data); err != nil {
		return nil, nil, err
	}
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing YAML: %w", err)
	}
	doc := newDocument(data, jsonData)
	cfg, dropped, err := decode(jsonData, doc, withoutRule)
	if err != nil && looksLikeChartValues(doc.tree) {
		return nil, nil, fmt.Errorf("%w\n%s", err, chartValuesHint)
	}
	return cfg, dropped, err
}

func decode(jsonData []byte, doc document, withoutRule bool) (*Config, error, error) {
	// A null document is one left empty (a comment, ---): validate says what it lacks.
	if _, ok := doc.tree.(map[string]any); !ok && doc.tree != nil {
		return nil, nil, fmt.Errorf("the configuration must be a map of fields (apiVersion: %s, kind: %s, pool: ...), not %s: %s",
			APIVersion, Kind, describeValue(doc.tree), written(doc.tree, doc.src))
	}
	typeErrs := typeErrors(doc.tree, doc.src, configType, nil)
	cfg := Default()
	cfg.APIVersion, cfg.Kind = "", "" // the file must say what it is
	strictErrs, err := sigsjson.UnmarshalStrict(jsonData, cfg, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		if len(typeErrs) > 0 {
			return nil, nil, listed(typeErrs)
		}
		return nil, nil, fmt.Errorf("decoding: %w", cleanJSONError(err))
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, 0, len(strictErrs))
		for _, e := range strictErrs {
			msgs = append(msgs, e.Error())
		}
		return nil, nil, fmt.Errorf("decoding: %s", strings.Join(msgs, "; "))
	}
	cfg.complete()
	errs := cfg.validate()
	var dropped error
	if withoutRule {
		// The template is evaluated once, by validate: a rule near its time limit (or one reading
		// now) could pass a second evaluation and fail the first, or the reverse.
		when := field.NewPath("upgrade", "when").String()
		var rule field.ErrorList
		errs = slices.DeleteFunc(errs, func(e *field.Error) bool {
			if e.Field == when {
				rule = append(rule, e)
				return true
			}
			return false
		})
		if len(rule) > 0 {
			dropped = listed(rule)
			cfg.Upgrade.When = ""
		}
	}
	// Decoded, the document can hold only map values left empty, which the decoder reads as "".
	if err := listed(append(typeErrs, errs...)); err != nil {
		return nil, nil, err
	}
	return cfg, dropped, nil
}

// listed returns the field errors as one error: nil for none, the error itself for one, and for
// several one line each under a count, so that a file with many problems reads as a list rather
// than as one bracketed line. A message given twice is listed once.
func listed(errs field.ErrorList) error {
	// As ToAggregate does, the same message once.
	seen := map[string]bool{}
	errs = slices.DeleteFunc(slices.Clone(errs), func(e *field.Error) bool {
		dup := seen[e.Error()]
		seen[e.Error()] = true
		return dup
	})
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return fieldErrors(errs)
}

type fieldErrors field.ErrorList

func (e fieldErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(e))
	for _, err := range e {
		b.WriteString("\n  - ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap returns the field errors, for errors.Is and errors.As.
func (e fieldErrors) Unwrap() []error {
	out := make([]error, len(e))
	for i, err := range e {
		out[i] = err
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// singleDocument refuses a file of several YAML documents: only the first would be read, and the
// others ignored without a word. Empty documents after the first (a trailing "---") are harmless.
// A syntax error in the first document is left to the decoder, whose message says more.
func singleDocument(data []byte) error {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	docs, firstEmpty := 0, false
	for {
		var doc yamlv3.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) || (err != nil && docs == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("parsing YAML document %d: %w", docs+1, err)
		}
		docs++
		empty := len(doc.Content) == 0 || (doc.Content[0].Kind == yamlv3.ScalarNode && doc.Content[0].ShortTag() == "!!null")
		if docs == 1 {
			firstEmpty = empty
		} else if !empty || firstEmpty {
			return fmt.Errorf("the file holds %d or more YAML documents (separated by ---); the configuration is one document", docs)
		}
	}
}

// complete fills values derived from others.
func (c *Config) complete() {
	if c.Instance == "" {
		c.Instance = c.Warmer.Namespace + "/" + c.Warmer.DaemonSetName
	}
}

// Validate checks every field and returns all problems at once, each with its field path.
func (c *Config) Validate() error {
	return listed(c.validate())
}

func (c *Config) validate() field.ErrorList {
	var errs field.ErrorList
	switch c.APIVersion {
	case APIVersion:
	case "":
		errs = append(errs, field.Required(field.NewPath("apiVersion"), APIVersion))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	switch c.Kind {
	case Kind:
	case "":
		errs = append(errs, field.Required(field.NewPath("kind"), Kind))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	errs = append(errs, validateInstance(field.NewPath("instance"), c.Instance)...)
	errs = append(errs, c.validatePool()...)
	errs = append(errs, c.validateTaintAndLabel()...)
	errs = append(errs, c.validateUpgrade()...)
	errs = append(errs, c.validateMaintenance()...)

	wp := field.NewPath("warmer")
	for _, msg := range validation.IsDNS1123Label(c.Warmer.Namespace) {
		errs = append(errs, field.Invalid(wp.Child("namespace"), c.Warmer.Namespace, msg))
	}
	for _, msg := range validation.IsDNS1123Subdomain(c.Warmer.DaemonSetName) {
		errs = append(errs, field.Invalid(wp.Child("daemonSetName"), c.Warmer.DaemonSetName, msg))
	}

	errs = append(errs, validateBudget(field.NewPath("maxConcurrent"), c.MaxConcurrent)...)
	errs = append(errs, c.CancelAfter.validate(field.NewPath("cancelAfter"), false)...)
	errs = append(errs, c.MaxWaitForUpgrade.validate(field.NewPath("maxWaitForUpgrade"), true)...)
	errs = append(errs, c.MaxWaitForWarm.validate(field.NewPath("maxWaitForWarm"), true)...)
	switch c.OnWarmTimeout {
	case OnWarmTimeoutRelease, OnWarmTimeoutKeep:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("onWarmTimeout"), c.OnWarmTimeout,
			[]OnWarmTimeout{OnWarmTimeoutRelease, OnWarmTimeoutKeep}))
	}
	if c.Events.Namespace != "default" {
		// The API server refuses a core/v1 Event about a cluster-scoped object (a node) in any
		// other namespace: every Event, the Warnings included, would be lost.
		errs = append(errs, field.NotSupported(field.NewPath("events", "namespace"), c.Events.Namespace, []string{"default"}))
	}
	cp := field.NewPath("client")
	if q := c.Client.QPS; q != nil && *q <= 0 && *q != -1 {
		errs = append(errs, field.Invalid(cp.Child("qps"), *q, "must be greater than 0, or -1 to turn the client-side rate limit off"))
	}
	if c.Client.Burst < 1 {
		errs = append(errs, field.Invalid(cp.Child("burst"), c.Client.Burst, "must be at least 1"))
	}
	errs = append(errs, c.Client.Timeout.validate(cp.Child("timeout"), true)...)
	return errs
}

// validateInstance checks <namespace>/<release>: a namespace name and a DNS-1123 subdomain (every
// Helm release name is one; so is the default's warmer DaemonSet name).
func validateInstance(p *field.Path, instance string) field.ErrorList {
	ns, release, ok := strings.Cut(instance, "/")
	if !ok || strings.Contains(release, "/") {
		return field.ErrorList{field.Invalid(p, instance, "must be <namespace>/<release>, with exactly one '/'")}
	}
	if ns == "" || release == "" {
		return field.ErrorList{field.Invalid(p, instance, "must be <namespace>/<release>, both non-empty")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(ns) {
		errs = append(errs, field.Invalid(p, instance, "namespace "+strconv.Quote(ns)+" of <namespace>/<release>: "+msg))
	}
	for _, msg := range validation.IsDNS1123Subdomain(release) {
		errs = append(errs, field.Invalid(p, instance, "release "+strconv.Quote(release)+" of <namespace>/<release>: "+msg))
	}
	return errs
}

func (c *Config) validatePool() field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("pool", "nodeSelector")
	if len(c.Pool.NodeSelector) == 0 {
		return append(errs, field.Required(p, "the pool must be selected by at least one label; an empty selector would manage every node"))
	}
	for k, v := range c.Pool.NodeSelector {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p.Key(k), k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Key(k), v, msg))
		}
	}
	return errs
}

func (c *Config) validateTaintAndLabel() field.ErrorList {
	var errs field.ErrorList
	tp := field.NewPath("taint")
	for _, msg := range validation.IsQualifiedName(c.Taint.Key) {
		errs = append(errs, field.Invalid(tp.Child("key"), c.Taint.Key, msg))
	}
	if state.NodeControllerTaint(c.Taint.Key) {
		// The node lifecycle and cloud node controllers keep these taints in step with the node's
		// state: ours would be removed within seconds, and the node released as if by an operator.
		errs = append(errs, field.Invalid(tp.Child("key"), c.Taint.Key,
			"taints under node.kubernetes.io/ and node.cloudprovider.kubernetes.io/ are kept by Kubernetes' node controllers, which would remove it"))
	}
	for _, msg := range validation.IsValidLabelValue(c.Taint.Value) {
		errs = append(errs, field.Invalid(tp.Child("value"), c.Taint.Value, msg))
	}
	switch c.Taint.Effect {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
	default:
		errs = append(errs, field.NotSupported(tp.Child("effect"), c.Taint.Effect, []corev1.TaintEffect{
			corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute}))
	}
	lp := field.NewPath("statusLabel")
	for _, msg := range validation.IsQualifiedName(c.StatusLabel.Key) {
		errs = append(errs, field.Invalid(lp.Child("key"), c.StatusLabel.Key, msg))
	}
	if state.KubernetesLabel(c.StatusLabel.Key) {
		errs = append(errs, field.Invalid(lp.Child("key"), c.StatusLabel.Key, "must not be in a namespace Kubernetes keeps for itself (kubernetes.io, k8s.io)"))
	}
	if _, inPool := c.Pool.NodeSelector[c.StatusLabel.Key]; inPool {
		errs = append(errs, field.Invalid(lp.Child("key"), c.StatusLabel.Key, "must not be one of the pool's selector labels"))
	}
	if sel := c.NodeLabelSelector(); sel != nil {
		// Entering a node sets this label: a maintenance read from it would end there.
		reqs, _ := sel.Requirements()
		for _, r := range reqs {
			if r.Key() == c.StatusLabel.Key {
				errs = append(errs, field.Invalid(lp.Child("key"), c.StatusLabel.Key, "must not be a label maintenance.nodeLabel.selector reads"))
				break
			}
		}
	}
	if c.StatusLabel.Key == c.Upgrade.KernelVersionLabel && c.StatusLabel.Key != "" {
		errs = append(errs, field.Invalid(lp.Child("key"), c.StatusLabel.Key, "must differ from upgrade.kernelVersionLabel"))
	}
	for name, v := range map[string]string{"value": c.StatusLabel.Value, "warmingValue": c.StatusLabel.WarmingValue} {
		if v == "" {
			errs = append(errs, field.Required(lp.Child(name), "a non-empty label value"))
			continue
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(lp.Child(name), v, msg))
		}
	}
	if c.StatusLabel.Value != "" && c.StatusLabel.Value == c.StatusLabel.WarmingValue {
		errs = append(errs, field.Invalid(lp.Child("warmingValue"), c.StatusLabel.WarmingValue, "must differ from statusLabel.value"))
	}
	return errs
}

func (c *Config) validateUpgrade() field.ErrorList {
	var errs field.ErrorList
	up := field.NewPath("upgrade")
	seen := map[string]bool{}
	for i, v := range c.Upgrade.KernelVersions {
		p := up.Child("kernelVersions").Index(i)
		switch {
		case strings.TrimSpace(v) == "":
			errs = append(errs, field.Invalid(p, v, "must not be empty"))
		case strings.ContainsFunc(v, unicode.IsSpace):
			errs = append(errs, field.Invalid(p, v, "must not contain whitespace (a kernel version, as uname -r prints it, has none)"))
		case seen[v]:
			errs = append(errs, field.Duplicate(p, v))
		}
		seen[v] = true
		if c.Upgrade.KernelVersionLabel != "" {
			// The DaemonSet's affinity matches these against the label, so they must be label values.
			for _, msg := range validation.IsValidLabelValue(v) {
				errs = append(errs, field.Invalid(p, v, msg+" (it is matched against label "+c.Upgrade.KernelVersionLabel+")"))
			}
		}
	}
	if c.Upgrade.KernelVersionLabel != "" {
		for _, msg := range validation.IsQualifiedName(c.Upgrade.KernelVersionLabel) {
			errs = append(errs, field.Invalid(up.Child("kernelVersionLabel"), c.Upgrade.KernelVersionLabel, msg))
		}
	}
	if c.Upgrade.When != "" {
		if _, err := upgrade.NewRule(c.Upgrade.KernelVersions, c.Upgrade.KernelVersionLabel, c.Upgrade.When); err != nil {
			errs = append(errs, field.Invalid(up.Child("when"), c.Upgrade.When, err.Error()))
		}
	}
	return errs
}

func (c *Config) validateMaintenance() field.ErrorList {
	var errs field.ErrorList
	mp := field.NewPath("maintenance")
	m := c.Maintenance
	if !m.NodeMaintenance.Enabled && !m.NodeLabel.Enabled && !m.Cordoned.Enabled {
		errs = append(errs, field.Required(mp, "enable at least one of nodeMaintenance, nodeLabel, cordoned"))
	}
	if nm := m.NodeMaintenance; nm.Enabled {
		p := mp.Child("nodeMaintenance")
		for _, msg := range validation.IsDNS1123Subdomain(nm.Group) {
			errs = append(errs, field.Invalid(p.Child("group"), nm.Group, msg))
		}
		if !strings.Contains(nm.Group, ".") {
			// The core group, or another of Kubernetes' own: the chart grants list and watch on
			// the resource named here, which could then be secrets.
			errs = append(errs, field.Invalid(p.Child("group"), nm.Group,
				"must be a custom resource's API group, which has at least one dot (such as nodemaintenance.medik8s.io)"))
		}
		if nm.Version == "" {
			errs = append(errs, field.Required(p.Child("version"), "the API version the CRD serves, such as v1beta1"))
		} else {
			// A version no CRD can serve would leave the source reading nothing, with only a warning.
			for _, msg := range validation.IsDNS1035Label(nm.Version) {
				errs = append(errs, field.Invalid(p.Child("version"), nm.Version, msg+" (CRD version names are, e.g. v1beta1)"))
			}
		}
		for _, msg := range validation.IsDNS1123Label(nm.Resource) {
			errs = append(errs, field.Invalid(p.Child("resource"), nm.Resource, msg+" (the plural resource name, e.g. nodemaintenances)"))
		}
		if nm.Namespace != "" {
			for _, msg := range validation.IsDNS1123Label(nm.Namespace) {
				errs = append(errs, field.Invalid(p.Child("namespace"), nm.Namespace, msg))
			}
		}
		if !fieldPathRE.MatchString(nm.NodeNameField) {
			errs = append(errs, field.Invalid(p.Child("nodeNameField"), nm.NodeNameField,
				"must be a dotted field path such as spec.nodeName: names of letters, digits, '_' and '-' joined by '.'"))
		}
	}
	if nl := m.NodeLabel; nl.Enabled {
		p := mp.Child("nodeLabel", "selector")
		if strings.TrimSpace(nl.Selector) == "" {
			errs = append(errs, field.Required(p, "a label selector such as upgrade.example.com/pending=true"))
		} else if sel, err := labels.Parse(nl.Selector); err != nil {
			errs = append(errs, field.Invalid(p, nl.Selector, err.Error()))
		} else if sel.Empty() {
			errs = append(errs, field.Invalid(p, nl.Selector, "must select something"))
		}
	}
	return errs
}

// fieldPathRE is a dotted field path, as the chart's values.schema.json accepts for
// maintenance.nodeMaintenance.nodeNameField.
var fieldPathRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

func validateBudget(p *field.Path, v intstr.IntOrString) field.ErrorList {
	if v.Type == intstr.Int {
		if v.IntVal < 0 {
			return field.ErrorList{field.Invalid(p, v.IntVal, "must be 0 (no limit) or more")}
		}
		return nil
	}
	s := v.StrVal
	if _, err := strconv.Atoi(s); err == nil {
		// Quoted, a number is a string; only a percentage is written as one.
		return field.ErrorList{field.Invalid(p, s, "a number must be written without quotes ("+p.String()+": "+s+"); only a percentage such as 25% is a string")}
	}
	if !strings.HasSuffix(s, "%") {
		return field.ErrorList{field.Invalid(p, s, "must be an integer or a percentage such as 25%")}
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSuffix(s, "%"), "%d", &n); err != nil || fmt.Sprintf("%d%%", n) != s || n < 1 || n > 100 {
		return field.ErrorList{field.Invalid(p, s, "must be a percentage from 1% to 100%, or 0 (the number) for no limit")}
	}
	return nil
}

// PoolSelector returns the pool's node selector as a labels.Selector.
func (c *Config) PoolSelector() labels.Selector {
	return labels.SelectorFromSet(c.Pool.NodeSelector)
}

// ReadLabelKeys returns the node label keys the configuration reads: the pool selector's, the
// nodeLabel source's, the status label and the kernel version label.
func (c *Config) ReadLabelKeys() map[string]bool {
	keys := map[string]bool{c.StatusLabel.Key: true}
	if k := c.Upgrade.KernelVersionLabel; k != "" {
		keys[k] = true
	}
	for _, sel := range []labels.Selector{c.PoolSelector(), c.NodeLabelSelector()} {
		if sel == nil {
			continue
		}
		reqs, _ := sel.Requirements()
		for _, r := range reqs {
			keys[r.Key()] = true
		}
	}
	return keys
}

// NodeLabelSelector returns the nodeLabel source's selector, or nil when that source is off.
func (c *Config) NodeLabelSelector() labels.Selector {
	if !c.Maintenance.NodeLabel.Enabled {
		return nil
	}
	sel, err := labels.Parse(c.Maintenance.NodeLabel.Selector)
	if err != nil { // Validate refused it already.
		return labels.Nothing()
	}
	return sel
}

// cleanJSONError shortens encoding/json's messages about wrong types so they read as
// "taint.value: expected string, got bool". It is the fallback for a decoding error that
// typeErrors, which names the value as written and says what to write, does not account for.
func cleanJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s: expected %s, got %s", te.Field, te.Type.String(), te.Value)
	}
	return err
}

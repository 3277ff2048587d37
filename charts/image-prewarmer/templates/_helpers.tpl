{{/*
Chart name, truncated to 63 characters (label value limit).
*/}}
{{- define "image-prewarmer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name + chart name (once), truncated to 63 characters.
*/}}
{{- define "image-prewarmer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "image-prewarmer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels of every object. Pod templates use selectorLabels (stable) instead.
*/}}
{{- define "image-prewarmer.labels" -}}
helm.sh/chart: {{ include "image-prewarmer.chart" . | quote }}
{{ include "image-prewarmer.selectorLabels" . }}
app.kubernetes.io/version: {{ include "image-prewarmer.versionLabel" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: image-prewarmer
{{- end }}

{{/*
The app.kubernetes.io/version label: the image tag without a pinned digest (0.1.0@sha256:...), in the
characters a label value allows.
*/}}
{{- define "image-prewarmer.versionLabel" -}}
{{- $tag := .Values.orchestrator.image.tag | default .Chart.AppVersion }}
{{- regexReplaceAll "[^-A-Za-z0-9_.]" (first (splitList "@" $tag)) "_" | trunc 63 | trimAll "-_." }}
{{- end }}

{{/*
Selector labels: stable across chart and app versions.
*/}}
{{- define "image-prewarmer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "image-prewarmer.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/*
Name of the orchestrator's ServiceAccount.
*/}}
{{- define "image-prewarmer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "image-prewarmer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the pre-delete cleanup hook's ServiceAccount: one of its own when the chart creates
ServiceAccounts, so that the uninstall's patch on the warmer DaemonSet is never granted to the
orchestrator's pods, even when a failed uninstall leaves its Role behind; the orchestrator's
otherwise.
*/}}
{{- define "image-prewarmer.cleanupServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-cleanup" (regexReplaceAll "[-.]+$" (include "image-prewarmer.serviceAccountName" . | trunc 55) "") }}
{{- else }}
{{- include "image-prewarmer.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
The subjects of the release's RoleBindings and ClusterRoleBinding: the orchestrator's
ServiceAccount and the cleanup hook's, which needs the same reads and node writes.
*/}}
{{- define "image-prewarmer.rbacSubjects" -}}
- kind: ServiceAccount
  name: {{ include "image-prewarmer.serviceAccountName" . | quote }}
  namespace: {{ .Release.Namespace | quote }}
{{- if ne (include "image-prewarmer.cleanupServiceAccountName" .) (include "image-prewarmer.serviceAccountName" .) }}
- kind: ServiceAccount
  name: {{ include "image-prewarmer.cleanupServiceAccountName" . | quote }}
  namespace: {{ .Release.Namespace | quote }}
{{- end }}
{{- end }}

{{/*
Name of the warmer DaemonSet (also written into the orchestrator's config).
*/}}
{{- define "image-prewarmer.warmerName" -}}
{{- printf "%s-warmer" (include "image-prewarmer.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
Name of the CronJob: at most 52 characters, since the API server refuses longer CronJob names (the
names of its Jobs add 11). A release name may hold dots: the cut must not end with one.
*/}}
{{- define "image-prewarmer.cronJobName" -}}
{{- regexReplaceAll "[-.]+$" (include "image-prewarmer.fullname" . | trunc 52) "" }}
{{- end }}

{{/*
Name of the metrics Service (deployment mode): a DNS-1035 label, at most 63 characters. Release names
may start with a digit or hold dots, which a Service name may not: dots become dashes, and a name
that does not start with a letter gets an "m-" in front.
*/}}
{{- define "image-prewarmer.metricsServiceName" -}}
{{- $name := include "image-prewarmer.fullname" . | replace "." "-" }}
{{- if not (regexMatch "^[a-z]" $name) }}
{{- $name = printf "m-%s" $name }}
{{- end }}
{{- printf "%s-metrics" ($name | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding, FlowSchema) and of objects outside the
release namespace (the events Role): <namespace>.<fullname>, so that the same release name installed in
two namespaces does not collide. A namespace holds no dot, so no two releases share one (with a dash,
release x in namespace team-a and release a-x in namespace team would).
*/}}
{{- define "image-prewarmer.clusterName" -}}
{{- printf "%s.%s" .Release.Namespace (include "image-prewarmer.fullname" .) }}
{{- end }}

{{/*
The orchestrator image reference.
*/}}
{{- define "image-prewarmer.image" -}}
{{- printf "%s:%s" .Values.orchestrator.image.repository (.Values.orchestrator.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Path of the orchestrator binary in its image.
*/}}
{{- define "image-prewarmer.binary" -}}
/usr/local/bin/prewarm-orchestrator
{{- end }}

{{/*
The installation's taint as a toleration: its key and effect, whatever the value (operator Exists).
The orchestrator knows its taint by key and effect: a node that joins with `os-upgrade:NoSchedule`
(a registration or startup taint often has no value) is adopted, and its warmer must run there.
*/}}
{{- define "image-prewarmer.taintToleration" -}}
- key: {{ .Values.taint.key | quote }}
  operator: Exists
  effect: {{ .Values.taint.effect | quote }}
{{- end }}

{{/*
runAsUser and runAsGroup from securityContext, each left out when null (the platform assigns it:
Helm deletes a key set to null). Without the securityContext key at all (values reused by `helm
upgrade --reuse-values` from a chart without it), the image's user.
*/}}
{{- define "image-prewarmer.runAs" -}}
{{- $sc := dict "runAsUser" 65532 "runAsGroup" 65532 }}
{{- if hasKey .Values "securityContext" }}
{{- $sc = .Values.securityContext | default dict }}
{{- end }}
{{- if not (kindIs "invalid" $sc.runAsUser) }}
runAsUser: {{ int64 $sc.runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" $sc.runAsGroup) }}
runAsGroup: {{ int64 $sc.runAsGroup }}
{{- end }}
{{- end }}

{{/*
Restricted Pod Security: pod-level securityContext.
*/}}
{{- define "image-prewarmer.podSecurityContext" -}}
runAsNonRoot: true
{{- include "image-prewarmer.runAs" . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Restricted Pod Security: container-level securityContext (also forces the user, so images whose
default user is root still run).
*/}}
{{- define "image-prewarmer.containerSecurityContext" -}}
runAsNonRoot: true
{{- include "image-prewarmer.runAs" . }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A Go duration in the form values.schema.json allows ("0", or parts of a number, possibly with a
fraction, and a unit h, m, s, ms, us, µs or ns, e.g. 1h30m or 1.5s) as time.ParseDuration reads it:
a whole number of nanoseconds (each part truncated to whole nanoseconds, as Go does, so 0.5ns is 0),
or "overflow" beyond 2562047h47m16.854775807s, which Go refuses. Integer parts are counted exactly
(int64); only a fraction's nanoseconds go through floating point. Helm has no duration parser.
*/}}
{{- define "image-prewarmer.durationNs" -}}
{{- $unitNs := dict "h" 3600000000000 "m" 60000000000 "s" 1000000000 "ms" 1000000 "us" 1000 "µs" 1000 "ns" 1 }}
{{- $max := 9223372036854775807 }}
{{- $total := 0 }}
{{- $overflow := false }}
{{- range regexFindAll "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $unit := regexFind "(ns|us|µs|ms|s|m|h)$" . }}
{{- $u := get $unitNs $unit }}
{{- $number := splitList "." (trimSuffix $unit .) }}
{{- $int := regexReplaceAll "^0+" (first $number) "" }}
{{- /* time.ParseDuration refuses an integer part beyond the int64 range, and one times its unit beyond it. */}}
{{- if or (gt (len $int) 19) (and (eq (len $int) 19) (gt $int (toString $max))) (gt (atoi $int) (div $max $u)) }}
{{- $overflow = true }}
{{- else }}
{{- $v := mul (atoi $int) $u }}
{{- $f := 0 }}
{{- if gt (len $number) 1 }}
{{- $f = floor (mulf (float64 (printf "0.%s0" (last $number))) $u) | int64 }}
{{- end }}
{{- if gt $f (sub $max $v) }}
{{- $overflow = true }}
{{- else if gt (add $v $f) (sub $max $total) }}
{{- $overflow = true }}
{{- else }}
{{- $total = add $total $v $f }}
{{- end }}
{{- end }}
{{- end }}
{{- if $overflow }}overflow{{ else }}{{ $total }}{{ end }}
{{- end }}

{{/*
The same duration as a number of milliseconds, printed as a float (convert the result with float64).
*/}}
{{- define "image-prewarmer.durationMs" -}}
{{- divf (include "image-prewarmer.durationNs" . | int64) 1000000.0 }}
{{- end }}

{{/*
Checks that combine several values (values.schema.json checks each value alone).
*/}}
{{- define "image-prewarmer.validate" -}}
{{- with .Values.orchestrator.cronJob.pushgateway }}
{{- /* What the schema's pattern lets through and Go's URL parser refuses (an IPv6 literal that is not one) fails here, as the orchestrator would. */}}
{{- $_ := urlParse . }}
{{- end }}
{{- if regexMatch "^node\\.(cloudprovider\\.)?kubernetes\\.io/" .Values.taint.key }}
{{- fail (printf "taint.key %q: taints under node.kubernetes.io/ and node.cloudprovider.kubernetes.io/ are kept in step with the node's state by Kubernetes' node controllers, which would remove this one; use a key of your own such as example.com/os-upgrade" .Values.taint.key) }}
{{- end }}
{{- if regexMatch "^([^/]*\\.)?(kubernetes\\.io|k8s\\.io)/" .Values.statusLabel.key }}
{{- fail (printf "statusLabel.key %q: label keys under kubernetes.io/ and k8s.io/ (and their subdomains) are Kubernetes' own; use a key of your own such as example.com/os-upgrade-status" .Values.statusLabel.key) }}
{{- end }}
{{- if eq (lower (.Values.orchestrator.cronJob.timeZone | default "")) "local" }}
{{- fail (printf "orchestrator.cronJob.timeZone %q: the API server refuses the local zone; name a zone such as Europe/Paris, or leave it empty for kube-controller-manager's" .Values.orchestrator.cronJob.timeZone) }}
{{- end }}
{{- if and .Values.orchestrator.metrics.serviceMonitor.enabled (ne .Values.orchestrator.mode "deployment") }}
{{- fail "orchestrator.metrics.serviceMonitor.enabled needs orchestrator.mode=deployment (in cronjob mode, push metrics with orchestrator.cronJob.pushgateway)" }}
{{- end }}
{{- with .Values.orchestrator.metrics.prometheusRule }}
{{- if .enabled }}
{{- $deployment := eq $.Values.orchestrator.mode "deployment" }}
{{- if and (not $deployment) (not $.Values.orchestrator.cronJob.pushgateway) }}
{{- fail "orchestrator.metrics.prometheusRule.enabled needs metrics to alert on: orchestrator.mode=deployment, or orchestrator.cronJob.pushgateway in cronjob mode" }}
{{- end }}
{{- if and $deployment (not $.Values.orchestrator.metrics.serviceMonitor.enabled) (not .selector) }}
{{- fail "orchestrator.metrics.prometheusRule.enabled in mode deployment reads the series the ServiceMonitor scrapes: set orchestrator.metrics.serviceMonitor.enabled=true, or orchestrator.metrics.prometheusRule.selector to the label matchers of your own scrape of the metrics Service" }}
{{- end }}
{{- $all := list "ImagePrewarmerReconcileFailing" "ImagePrewarmerNodeProblem" "ImagePrewarmerNodeReleasedCold" }}
{{- if $deployment }}{{ $all = append $all "ImagePrewarmerNoLeader" }}{{ end }}
{{- $disabled := .disabled | default list }}
{{- $left := 0 }}
{{- range $all }}{{ if not (has . $disabled) }}{{ $left = add1 $left }}{{ end }}{{ end }}
{{- if not $left }}
{{- fail "orchestrator.metrics.prometheusRule.disabled leaves out every alert of this mode: set orchestrator.metrics.prometheusRule.enabled=false instead" }}
{{- end }}
{{- range $key := list "alertname" "reason" }}
{{- if hasKey ($.Values.orchestrator.metrics.prometheusRule.alertLabels | default dict) $key }}
{{- fail (printf "orchestrator.metrics.prometheusRule.alertLabels: %q is a label the alerts set themselves" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* A request above its limit is refused by the API server: an override of a request alone keeps
the default limit (Helm merges maps), and a refused cleanup Job would stop helm uninstall. */}}
{{- range $path, $res := dict "orchestrator.resources" .Values.orchestrator.resources "prewarm.resources" .Values.prewarm.resources }}
{{- $limits := ($res | default dict).limits | default dict }}
{{- range $name, $req := ($res | default dict).requests | default dict }}
{{- $lim := get $limits $name }}
{{- $r := include "image-prewarmer.quantity" $req }}
{{- $l := include "image-prewarmer.quantity" $lim }}
{{- if and (not (kindIs "invalid" $lim)) $r $l (gt (float64 $r) (float64 $l)) }}
{{- fail (printf "%s.requests.%s (%v) is above %s.limits.%s (%v), which the API server refuses: raise the limit too (an override of the request alone keeps the chart's default limit)" $path $name $req $path $name $lim) }}
{{- end }}
{{- end }}
{{- /* Hugepages and extended resources (a name with a domain, such as example.com/gpu) cannot be
overcommitted: the API server wants a limit equal to any request, and whole numbers of an extended
resource. */}}
{{- $requests := ($res | default dict).requests | default dict }}
{{- range $name, $_ := merge (dict) $requests $limits }}
{{- if not (has $name (list "cpu" "memory" "ephemeral-storage")) }}
{{- $req := get $requests $name }}
{{- $lim := get $limits $name }}
{{- if and (hasKey $requests $name) (not (hasKey $limits $name)) }}
{{- fail (printf "%s.requests.%s needs %s.limits.%s, equal to it: the API server does not let hugepages or extended resources be overcommitted" $path $name $path $name) }}
{{- end }}
{{- $r := include "image-prewarmer.quantity" $req }}
{{- $l := include "image-prewarmer.quantity" $lim }}
{{- /* Equal within float rounding: 4.1G and 4100M are the same quantity. */}}
{{- $d := 0.0 }}
{{- if and $r $l }}{{ $d = subf (float64 $r) (float64 $l) }}{{ end }}
{{- $tol := mulf (maxf (float64 ($r | default "0")) (float64 ($l | default "0"))) 1e-12 }}
{{- if and (hasKey $requests $name) $r $l (or (gt $d $tol) (lt $d (mulf $tol -1.0))) }}
{{- fail (printf "%s.requests.%s (%v) must equal %s.limits.%s (%v): the API server does not let hugepages or extended resources be overcommitted" $path $name $req $path $name $lim) }}
{{- end }}
{{- if contains "/" $name }}
{{- range $kind, $v := dict "requests" $req "limits" $lim }}
{{- $n := include "image-prewarmer.quantity" $v }}
{{- if and $n (ne (float64 $n) (floor (float64 $n))) }}
{{- fail (printf "%s.%s.%s (%v) must be a whole number: the API server refuses a fraction of an extended resource" $path $kind $name $v) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.orchestrator.flowSchema.enabled (eq .Values.orchestrator.flowSchema.priorityLevel "exempt") }}
{{- fail "orchestrator.flowSchema.priorityLevel: exempt would take the orchestrator's requests out of API Priority and Fairness altogether (neither queued nor limited): name a priority level such as workload-high" }}
{{- end }}
{{- if and .Values.upgrade.kernelVersionLabel (eq .Values.statusLabel.key .Values.upgrade.kernelVersionLabel) }}
{{- fail (printf "statusLabel.key %q must differ from upgrade.kernelVersionLabel" .Values.statusLabel.key) }}
{{- end }}
{{- if hasKey .Values.pool.nodeSelector .Values.statusLabel.key }}
{{- fail (printf "statusLabel.key %q must not be one of the labels of pool.nodeSelector" .Values.statusLabel.key) }}
{{- end }}
{{- if eq .Values.statusLabel.value .Values.statusLabel.warmingValue }}
{{- fail (printf "statusLabel.warmingValue %q must differ from statusLabel.value" .Values.statusLabel.warmingValue) }}
{{- end }}
{{- if and .Values.maintenance.nodeLabel.enabled (not (trim (.Values.maintenance.nodeLabel.selector | default ""))) }}
{{- fail "maintenance.nodeLabel.selector is required when maintenance.nodeLabel.enabled is true" }}
{{- end }}
{{- if not (hasPrefix "@" .Values.schedule) }}
{{- /* Five fields, each a comma-separated list of *, ?, a value or a range a-b, each with an optional
step /n: checked here field by field (the schema only tells them from the descriptors), so that the
message names the field that is wrong rather than quoting one regular expression for all five; and
a range a-b must not start after its end (the API server refuses 22-2). Names match in ASCII
letter cases only ([Jj][Aa][Nn]): Go's (?i) also folds the long s (ſ) into s, which cron refuses. */}}
{{- $names := list (dict) (dict) (dict) (dict "jan" 1 "feb" 2 "mar" 3 "apr" 4 "may" 5 "jun" 6 "jul" 7 "aug" 8 "sep" 9 "oct" 10 "nov" 11 "dec" 12) (dict "sun" 0 "mon" 1 "tue" 2 "wed" 3 "thu" 4 "fri" 5 "sat" 6) }}
{{- $fields := list "minute" "hour" "day-of-month" "month" "day-of-week" }}
{{- $values := list "(0?[0-9]|[1-5][0-9])" "(0?[0-9]|1[0-9]|2[0-3])" "(0?[1-9]|[12][0-9]|3[01])" "(0?[1-9]|1[0-2]|[Jj][Aa][Nn]|[Ff][Ee][Bb]|[Mm][Aa][Rr]|[Aa][Pp][Rr]|[Mm][Aa][Yy]|[Jj][Uu][Nn]|[Jj][Uu][Ll]|[Aa][Uu][Gg]|[Ss][Ee][Pp]|[Oo][Cc][Tt]|[Nn][Oo][Vv]|[Dd][Ee][Cc])" "(0?[0-6]|[Ss][Uu][Nn]|[Mm][Oo][Nn]|[Tt][Uu][Ee]|[Ww][Ee][Dd]|[Tt][Hh][Uu]|[Ff][Rr][Ii]|[Ss][Aa][Tt])" }}
{{- $ranges := list "0-59" "0-23" "1-31" "1-12 or JAN-DEC" "0-6 or SUN-SAT" }}
{{- $split := regexSplit "[ \t]+" $.Values.schedule -1 }}
{{- if regexMatch "^(CRON_)?TZ=" $.Values.schedule }}
{{- fail (printf "schedule %q: no CRON_TZ= or TZ= prefix: set orchestrator.cronJob.timeZone" $.Values.schedule) }}
{{- end }}
{{- if ne (len $split) 5 }}
{{- fail (printf "schedule %q: must be five fields separated by spaces (minute hour day-of-month month day-of-week), a descriptor such as @hourly, or @every and a duration" $.Values.schedule) }}
{{- end }}
{{- range $i, $field := $split }}
{{- $item := printf "([*?]|%s(-%s)?)(/[1-9][0-9]{0,5})?" (index $values $i) (index $values $i) }}
{{- if not (regexMatch (printf "^%s(,%s)*$" $item $item) $field) }}
{{- fail (printf "schedule %q: the %s field %q must be a comma-separated list of *, ?, a value %s or a range of two such values (a-b), each with an optional step /n" $.Values.schedule (index $fields $i) $field (index $ranges $i)) }}
{{- end }}
{{- end }}
{{- range $i, $field := $split }}
{{- range splitList "," $field }}
{{- $ends := splitList "-" (first (splitList "/" .)) }}
{{- if eq (len $ends) 2 }}
{{- $m := index $names $i }}
{{- $start := ternary (get $m (lower (first $ends))) (atoi (first $ends)) (hasKey $m (lower (first $ends))) }}
{{- $end := ternary (get $m (lower (last $ends))) (atoi (last $ends)) (hasKey $m (lower (last $ends))) }}
{{- if gt $start $end }}
{{- fail (printf "schedule %q: the range %s-%s of the %s field starts after its end (to wrap around, list two ranges such as 22-23,0-2)" $.Values.schedule (first $ends) (last $ends) (index $fields $i)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.maintenance.nodeLabel.enabled }}
{{- /* Entering a node sets the status label: a maintenance read from it would end there. The keys are
what each requirement (split on commas outside the parentheses of in/notin) starts with. */}}
{{- range splitList "," (regexReplaceAll "\\([^)]*\\)" .Values.maintenance.nodeLabel.selector "") }}
{{- if eq (regexFind "^[^!=<> \t\r\n]+" (trim (trimPrefix "!" (trim .)))) $.Values.statusLabel.key }}
{{- fail (printf "statusLabel.key %q must not be a label maintenance.nodeLabel.selector reads" $.Values.statusLabel.key) }}
{{- end }}
{{- end }}
{{- /* The schema checks the selector's grammar; a DNS prefix's length (at most 253) is beyond a regular expression. */}}
{{- range regexFindAll "[^ \t\r\n!=,()<>]+/" .Values.maintenance.nodeLabel.selector -1 }}
{{- if gt (len .) 254 }}
{{- fail (printf "maintenance.nodeLabel.selector: the prefix of label key %s is longer than 253 characters" (trimSuffix "/" . | quote)) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* In a values file, an unquoted on, yes, y or true (off, no, n or false), in lower, title or upper
case, is a YAML 1.1 boolean: as a map key, Helm (sigs.k8s.io/yaml) makes it the key "true" ("false")
before the chart sees the values, and the label key meant is lost (pool.nodeSelector {on: x} would
make the pool the nodes labelled true=x). The maps whose keys become label keys or selectors take
neither key: the chart cannot tell one written so from a quoted "true". --set keeps keys as written. */}}
{{- $labelMaps := list (list "pool.nodeSelector" .Values.pool.nodeSelector) (list "orchestrator.nodeSelector" .Values.orchestrator.nodeSelector) (list "orchestrator.metrics.serviceMonitor.labels" .Values.orchestrator.metrics.serviceMonitor.labels) (list "orchestrator.metrics.prometheusRule.labels" .Values.orchestrator.metrics.prometheusRule.labels) (list "orchestrator.metrics.prometheusRule.alertLabels" .Values.orchestrator.metrics.prometheusRule.alertLabels) }}
{{- $yamlBooleans := dict "true" (list "on, yes, y or true" "on") "false" (list "off, no, n or false" "off") }}
{{- range $labelMaps }}
{{- $path := index . 0 }}
{{- $labels := index . 1 }}
{{- if kindIs "map" $labels }}
{{- range $key, $words := $yamlBooleans }}
{{- if hasKey $labels $key }}
{{- fail (printf "%s: key %q is what a values file's YAML makes of an unquoted %s (lower, title or upper case): quote the label key, as in '%s': value (the chart takes no label key %q itself)" $path $key (index $words 0) (index $words 1) $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The schema checks label keys' syntax; a DNS prefix's length (at most 253) is beyond a regular expression. */}}
{{- $labelKeys := list (list "taint.key" .Values.taint.key) (list "statusLabel.key" .Values.statusLabel.key) (list "upgrade.kernelVersionLabel" (.Values.upgrade.kernelVersionLabel | default "")) }}
{{- range $key, $_ := .Values.pool.nodeSelector }}
{{- $labelKeys = append $labelKeys (list "pool.nodeSelector" $key) }}
{{- end }}
{{- range $labelKeys }}
{{- $prefix := regexFind "^[^/]*/" (last .) }}
{{- if gt (len $prefix) 254 }}
{{- fail (printf "%s: the prefix of label key %s is longer than 253 characters" (first .) (trimSuffix "/" $prefix | quote)) }}
{{- end }}
{{- end }}
{{- /* The Go durations the orchestrator reads: time.ParseDuration refuses one beyond
2562047h47m16.854775807s, and reads a positive one shorter than a nanosecond (0.0000000001s) as 0,
which the orchestrator refuses where a duration must be positive. The schema checks their form. */}}
{{- $durations := list (list "cancelAfter" .Values.cancelAfter false) (list "maxWaitForUpgrade" .Values.maxWaitForUpgrade true) (list "maxWaitForWarm" .Values.maxWaitForWarm true) (list "orchestrator.client.timeout" .Values.orchestrator.client.timeout true) }}
{{- if eq .Values.orchestrator.mode "deployment" }}
{{- $d := .Values.orchestrator.deployment }}
{{- $durations = concat $durations (list (list "orchestrator.deployment.resync" $d.resync true) (list "orchestrator.deployment.leaderElection.leaseDuration" $d.leaderElection.leaseDuration true) (list "orchestrator.deployment.leaderElection.renewDeadline" $d.leaderElection.renewDeadline true) (list "orchestrator.deployment.leaderElection.retryPeriod" $d.leaderElection.retryPeriod true)) }}
{{- end }}
{{- range $durations }}
{{- $ns := include "image-prewarmer.durationNs" (index . 1) }}
{{- if eq $ns "overflow" }}
{{- fail (printf "%s %q: out of range: a Go duration is at most 2562047h47m16.854775807s (about 292 years)" (index . 0) (index . 1)) }}
{{- end }}
{{- if and (index . 2) (eq $ns "0") }}
{{- fail (printf "%s %q: must be at least 1ns: a Go duration counts whole nanoseconds, so the orchestrator would read 0" (index . 0) (index . 1)) }}
{{- end }}
{{- end }}
{{- if eq .Values.orchestrator.mode "deployment" }}
{{- $le := .Values.orchestrator.deployment.leaderElection }}
{{- $lease := include "image-prewarmer.durationMs" $le.leaseDuration | float64 }}
{{- $renew := include "image-prewarmer.durationMs" $le.renewDeadline | float64 }}
{{- $retry := include "image-prewarmer.durationMs" $le.retryPeriod | float64 }}
{{- /* As the orchestrator (and client-go) require: leaseDuration > renewDeadline > 1.2 x retryPeriod. */}}
{{- if le $lease $renew }}
{{- fail (printf "orchestrator.deployment.leaderElection.leaseDuration (%s) must be longer than orchestrator.deployment.leaderElection.renewDeadline (%s)" $le.leaseDuration $le.renewDeadline) }}
{{- end }}
{{- if le $renew (mulf 1.2 $retry) }}
{{- fail (printf "orchestrator.deployment.leaderElection.renewDeadline (%s) must be longer than 1.2 x orchestrator.deployment.leaderElection.retryPeriod (%s)" $le.renewDeadline $le.retryPeriod) }}
{{- end }}
{{- end }}
{{- if not (or .Values.maintenance.nodeMaintenance.enabled .Values.maintenance.nodeLabel.enabled .Values.maintenance.cordoned.enabled) }}
{{- fail "maintenance: enable at least one of maintenance.nodeMaintenance, maintenance.nodeLabel, maintenance.cordoned" }}
{{- end }}
{{- if and (eq .Values.prewarm.method "imageVolume") (semverCompare "<1.35-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "prewarm.method: \"imageVolume\" needs Kubernetes 1.35 or later (image volumes); this cluster is %s. Use prewarm.method=hold" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if trim (.Values.upgrade.when | default "") }}
{{- /* upgrade.when is a Go template the orchestrator parses at start-up: one that does not parse
would stop every cycle (the pre-delete cleanup hook runs without it). Parse it here with tpl, as a
template of its own (a block: no else, break or outer variable of the wrapper reaches into it) in a
branch never taken, so nothing of it runs. Helm's functions differ from the orchestrator's (sprig
without env, expandenv and getHostByName): first, sha512sum (which a helm built with sprig older
than 3.3 lacks) becomes print, which every helm has; Helm's own functions, and getHostByName, become
names neither knows (Helm removes env and expandenv itself).
Renaming an identifier changes nothing but the meaning of a function call, so only function names
are affected. A template that defines named templates (define, which a block may not hold) is not
checked. A syntax error fails tpl, whose message quotes the text parsed: its comment names the value. */}}
{{- $when := regexReplaceAll "\\b(sha512sum)\\b" .Values.upgrade.when "print" }}
{{- $when = regexReplaceAll "\\b(include|tpl|required|lookup|toToml|fromToml|toYaml|toYamlPretty|fromYaml|fromYamlArray|fromJsonArray|getHostByName)\\b" $when "${1}_isNotAnOrchestratorFunction" }}
{{- if not (regexMatch "{{-?\\s*define\\b" $when) }}
{{- $_ := tpl (printf "{{/* upgrade.when does not parse as a Go template: */}}{{ if false }}{{ block \"upgrade.when\" . }}%s{{ end }}{{ end }}" $when) (dict) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
podFailurePolicy of the orchestrator's Jobs (CronJob, cleanup hook, helm test): a pod evicted by a
node drain (or preempted) does not count against backoffLimit; the Job runs it again. Exit codes
fail as usual: 2, an invalid configuration, is also the Go runtime's code for a crash, which a
retry may get past.
*/}}
{{- define "image-prewarmer.podFailurePolicy" -}}
podFailurePolicy:
  rules:
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
{{- end }}

{{/*
Pod spec of the orchestrator's pods (CronJob, Deployment, pre-delete cleanup hook, helm test).
Call with (dict "root" $ "args" (list "run" "--once") "restartPolicy" "Never"); "serviceAccountName"
replaces the orchestrator's ServiceAccount; "deployment" true adds the Deployment's parts: the HTTP port, probes and pod anti-affinity.
*/}}
{{- define "image-prewarmer.orchestratorPodSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $o := $v.orchestrator -}}
serviceAccountName: {{ .serviceAccountName | default (include "image-prewarmer.serviceAccountName" $root) | quote }}
automountServiceAccountToken: true
restartPolicy: {{ .restartPolicy | default "Never" }}
{{- with $o.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $o.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "image-prewarmer.podSecurityContext" $root | nindent 2 }}
{{- /* The image is built for Linux only: never on a Windows node, unless the values say otherwise. */}}
nodeSelector:
  {{- merge (deepCopy ($o.nodeSelector | default dict)) (dict "kubernetes.io/os" "linux") | toYaml | nindent 2 }}
{{- if $o.affinity }}
affinity:
  {{- toYaml $o.affinity | nindent 2 }}
  {{- if and .deployment (not $o.affinity.podAntiAffinity) }}
  {{- include "image-prewarmer.replicaAntiAffinity" $root | nindent 2 }}
  {{- end }}
{{- else }}
affinity:
  {{- if .deployment }}
  {{- include "image-prewarmer.replicaAntiAffinity" $root | nindent 2 }}
  {{- end }}
  nodeAffinity:
    # Prefer nodes outside the pool (system nodes): a node matching every pool label scores lower.
    preferredDuringSchedulingIgnoredDuringExecution:
      {{- range $k, $val := $v.pool.nodeSelector }}
      - weight: 100
        preference:
          matchExpressions:
            - key: {{ $k | quote }}
              operator: NotIn
              values: [{{ $val | quote }}]
      {{- end }}
{{- end }}
tolerations:
  # The installation's own taint, always: the product must never lock itself out.
  {{- include "image-prewarmer.taintToleration" $root | nindent 2 }}
  {{- with $o.tolerations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
containers:
  - name: orchestrator
    image: {{ include "image-prewarmer.image" $root | quote }}
    imagePullPolicy: {{ $o.image.pullPolicy }}
    command: [{{ include "image-prewarmer.binary" $root | quote }}]
    args:
      {{- range .args }}
      - {{ . | quote }}
      {{- end }}
      - "--config=/etc/image-prewarmer/config.yaml"
      - "--log-format={{ $o.logFormat }}"
      - "-v={{ $o.verbosity }}"
    env:
      # The container's memory limit (without one: the node's allocatable memory): the binary
      # gives the Go runtime 90% of it as a soft limit, so that it collects harder as the heap
      # nears it rather than let the kernel kill the process (GOMEMLIMIT, if set, wins).
      - name: PREWARM_MEMORY_LIMIT
        valueFrom:
          resourceFieldRef:
            resource: limits.memory
      # The Lease's holder identity and namespace.
      - name: POD_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.name
      - name: POD_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
    {{- if .deployment }}
    ports:
      - name: http-metrics
        containerPort: {{ $o.deployment.port }}
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /healthz
        port: http-metrics
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 3
    readinessProbe:
      httpGet:
        path: /readyz
        port: http-metrics
      periodSeconds: 5
      timeoutSeconds: 5
      failureThreshold: 3
    {{- end }}
    {{- with $o.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- include "image-prewarmer.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/image-prewarmer
        readOnly: true
volumes:
  - name: config
    configMap:
      name: {{ include "image-prewarmer.fullname" $root | quote }}
{{- end }}

{{/*
The pool selector as node-affinity match expressions (one "In" per label, sorted by key).
*/}}
{{- define "image-prewarmer.poolExpressions" -}}
{{- range $k, $val := .Values.pool.nodeSelector }}
- key: {{ $k | quote }}
  operator: In
  values: [{{ $val | quote }}]
{{- end }}
{{- end }}

{{/*
The pool selector in kubectl syntax (k1=v1,k2=v2), sorted by key.
*/}}
{{- define "image-prewarmer.poolSelectorString" -}}
{{- $parts := list }}
{{- range $k, $val := .Values.pool.nodeSelector }}
{{- $parts = append $parts (printf "%s=%s" $k $val) }}
{{- end }}
{{- join "," $parts }}
{{- end }}

{{/*
The Deployment's replicas on different nodes, so that one node going away never takes the leader and
its standby: kept when orchestrator.affinity sets only node affinity.
*/}}
{{- define "image-prewarmer.replicaAntiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "image-prewarmer.selectorLabels" . | nindent 12 }}
            app.kubernetes.io/component: orchestrator
{{- end }}

{{/*
The value of a resource quantity (100m, 64Mi, 1.5G, +2, 0.5, 1e3, a number from YAML) as a
number, for comparisons; "" for what it cannot read, which is then not compared.
*/}}
{{- define "image-prewarmer.quantity" -}}
{{- $q := toString . }}
{{- $num := regexFind "^[+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $q }}
{{- $mult := dict "" 1.0 "n" 1e-9 "u" 1e-6 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- $suffix := trimPrefix $num $q }}
{{- $n := trimPrefix "+" $num }}
{{- if and $num (hasKey $mult $suffix) }}{{ mulf (float64 $n) (get $mult $suffix) }}
{{- else if and $num (regexMatch "^[eE][+-]?[0-9]+$" $suffix) }}{{ mulf (float64 $n) (float64 (printf "1%s" $suffix)) }}
{{- end }}
{{- end }}

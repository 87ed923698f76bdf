{{/* Chart name, overridable. */}}
{{- define "jobnet-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name used for every namespaced object. */}}
{{- define "jobnet-operator.fullname" -}}
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

{{/* Name for cluster-scoped objects: qualified by the release namespace so two releases never collide. */}}
{{- define "jobnet-operator.clusterName" -}}
{{- printf "%s-%s" (include "jobnet-operator.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobnet-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobnet-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobnet-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* The console's pods: a name of their own, so that no operator selector matches them. */}}
{{- define "jobnet-operator.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "jobnet-operator.name" . }}-console
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jobnet-operator.labels" -}}
helm.sh/chart: {{ include "jobnet-operator.chart" . }}
{{ include "jobnet-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jobnet-operator
{{- end }}

{{- define "jobnet-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jobnet-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jobnet-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "jobnet-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "jobnet-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobnet-operator.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "jobnet-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobnet-operator.webhookCertificateName" -}}
{{- printf "%s-webhook" (include "jobnet-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The names the webhook's serving certificate covers: the Service's DNS names, the first is the subject.
*/}}
{{- define "jobnet-operator.webhookTLSNames" -}}
{{- $service := include "jobnet-operator.webhookServiceName" . }}
{{- $namespace := .Release.Namespace }}
{{- toJson (list (printf "%s.%s.svc" $service $namespace) $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc.cluster.local" $service $namespace)) }}
{{- end }}

{{/*
The admission paths the operator serves (jobnet/core/admission.py ENDPOINTS): it answers an
AdmissionReview by URL path, and a path it does not serve with 404 (the write fails).
*/}}
{{- define "jobnet-operator.jobnetWebhookPath" -}}/validate-jobnet{{- end }}
{{- define "jobnet-operator.jobrunWebhookPath" -}}/validate-jobrun{{- end }}
{{- define "jobnet-operator.jobrunMutatingWebhookPath" -}}/mutate-jobrun{{- end }}
{{- define "jobnet-operator.jobscheduleWebhookPath" -}}/validate-jobschedule{{- end }}
{{- define "jobnet-operator.jobcalendarWebhookPath" -}}/validate-jobcalendar{{- end }}

{{/*
The metadata and webhook entries of a Validating- or MutatingWebhookConfiguration (both reach
the same Service with the same TLS). Called with (dict "root" $ "kind" "validate"|"mutate"
"webhooks" (list (dict "name" "path" "operations") ...)).
*/}}
{{- define "jobnet-operator.webhookConfiguration" -}}
{{- $root := .root }}
{{- $kind := .kind }}
{{- $service := include "jobnet-operator.webhookServiceName" $root }}
{{- $selector := include "jobnet-operator.webhookNamespaceSelector" $root }}
metadata:
  name: {{ include "jobnet-operator.clusterName" $root }}
  labels:
    {{- include "jobnet-operator.labels" $root | nindent 4 }}
  {{- if $root.Values.webhook.certManager.enabled }}
  annotations:
    cert-manager.io/inject-ca-from: {{ printf "%s/%s" $root.Release.Namespace (include "jobnet-operator.webhookCertificateName" $root) }}
  {{- end }}
webhooks:
  {{- range $webhook := .webhooks }}
  - name: {{ $webhook.name }}.{{ $kind }}.jobnet.dev
    admissionReviewVersions: ["v1"]
    sideEffects: None
    failurePolicy: {{ $root.Values.webhook.failurePolicy }}
    matchPolicy: Equivalent
    timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
    {{- if eq $kind "mutate" }}
    reinvocationPolicy: IfNeeded
    {{- end }}
    namespaceSelector:
      {{- $selector | trim | nindent 6 }}
    rules:
      - apiGroups: ["jobnet.dev"]
        apiVersions: ["v1alpha1"]
        resources: [{{ $webhook.name | quote }}]
        operations: {{ toJson $webhook.operations }}
        scope: Namespaced
    clientConfig:
      service:
        name: {{ $service }}
        namespace: {{ $root.Release.Namespace }}
        path: {{ $webhook.path }}
        port: 443
      {{- /* No caBundle: the operator sets it (self-signed mode), or cert-manager's CA injector does. */}}
  {{- end }}
{{- end }}

{{/* The namespaceSelector of both webhooks. */}}
{{- define "jobnet-operator.webhookNamespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector }}
{{- toYaml .Values.webhook.namespaceSelector }}
{{- else if .Values.watchNamespaces }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      {{- range .Values.watchNamespaces }}
      - {{ . | quote }}
      {{- end }}
{{- else }}
{}
{{- end }}
{{- end }}

{{/*
Everything the operator calls in a watched namespace (or cluster-wide), and nothing else:
its custom resources and their status, Events about them, the JobNet snapshot ConfigMaps of its
JobRuns (owned by them; docs/api.md), the SSH credentials Secrets.
*/}}
{{- define "jobnet-operator.rbacRules" -}}
- apiGroups: ["jobnet.dev"]
  resources: ["jobnets"]
  verbs: ["list", "watch"]
- apiGroups: ["jobnet.dev"]
  resources: ["jobruns"]
  verbs: ["list", "watch", "get", "patch"]
- apiGroups: ["jobnet.dev"]
  resources: ["jobnets/status", "jobruns/status"]
  verbs: ["patch"]
{{ include "jobnet-operator.scheduleRules" . }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.rbac.secretNames }}
  resourceNames:
    {{- range . }}
    - {{ . | quote }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* JobSchedules: read schedules and calendars, write schedule status, create their JobRuns,
stop one (Replace: the stop annotation, a patch above) and delete old finished ones (history limits). */}}
{{- define "jobnet-operator.scheduleRules" -}}
- apiGroups: ["jobnet.dev"]
  resources: ["jobschedules", "jobcalendars"]
  verbs: ["list", "watch"]
- apiGroups: ["jobnet.dev"]
  resources: ["jobschedules/status"]
  verbs: ["patch"]
- apiGroups: ["jobnet.dev"]
  resources: ["jobruns"]
  verbs: ["create", "delete"]
{{- end }}

{{/* The Lease the replicas elect their leader with (in the release namespace). */}}
{{- define "jobnet-operator.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "jobnet-operator.fullname" .) }}
{{- end }}

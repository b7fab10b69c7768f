{{/*
The chart name, or nameOverride.
*/}}
{{- define "strom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of the release's resources: fullnameOverride, else <release>-<chart> (just <release> when
it already contains the chart name). Kept to 45 characters so that "-operator-metrics" still fits
in a DNS label.
*/}}
{{- define "strom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "strom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource, without the component.
*/}}
{{- define "strom.commonLabels" -}}
helm.sh/chart: {{ include "strom.chart" . }}
app.kubernetes.io/name: {{ include "strom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strom
{{- end }}

{{/*
Labels of the operator's resources.
*/}}
{{- define "strom.labels" -}}
{{ include "strom.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Selector labels of the operator pods (immutable in a Deployment: never add to them).
*/}}
{{- define "strom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "strom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "strom.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image.
*/}}
{{- define "strom.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The namespaces the JobManager ServiceAccount goes to, as a JSON list: jobServiceAccount.namespaces,
else watchNamespaces, else the release namespace.
*/}}
{{- define "strom.jobServiceAccountNamespaces" -}}
{{- if .Values.jobServiceAccount.namespaces }}
{{- .Values.jobServiceAccount.namespaces | uniq | toJson }}
{{- else if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
The operator's rules on FlinkJobs and what it creates for them (a ClusterRole's or each Role's).
*/}}
{{- define "strom.operatorRules" -}}
- apiGroups: ["strom.dev"]
  resources: ["flinkjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["strom.dev"]
  resources: ["flinkjobs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["strom.dev"]
  resources: ["flinkjobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

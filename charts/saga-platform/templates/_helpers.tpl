{{/* Chart name, truncated to a DNS label. */}}
{{- define "saga.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: the release name, unless it already contains the chart name. */}}
{{- define "saga.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component: <fullname>-<component>, truncated. */}}
{{- define "saga.component" -}}
{{- printf "%s-%s" (include "saga.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "saga.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels common to every object of the release. */}}
{{- define "saga.labels" -}}
helm.sh/chart: {{ include "saga.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: saga-platform
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component (stable across upgrades). Call with (dict "root" $ "component" "operator"). */}}
{{- define "saga.selectorLabels" -}}
app.kubernetes.io/name: {{ include "saga.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of a component. */}}
{{- define "saga.componentLabels" -}}
{{ include "saga.labels" .root }}
{{ include "saga.selectorLabels" . }}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "saga.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "saga.component" (dict "root" . "component" "operator")) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image reference: repository:tag (tag defaults to the chart's appVersion), or repository@digest. */}}
{{- define "saga.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context every workload of the chart gets. Call with (dict "uid" N "fsGroup" bool). */}}
{{- define "saga.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
{{- if .fsGroup }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context every container of the chart gets. */}}
{{- define "saga.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Names of the dev-mode objects. */}}
{{- define "saga.dev.rabbitmq" -}}{{ include "saga.component" (dict "root" . "component" "rabbitmq") }}{{- end -}}
{{- define "saga.dev.postgres" -}}{{ include "saga.component" (dict "root" . "component" "postgres") }}{{- end -}}

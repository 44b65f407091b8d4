{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "ip.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ip.fullname" -}}
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

{{- define "ip.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ip.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ip.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ip.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "ip.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ip.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The router Pods' ServiceAccount ("" = the namespace's default). */}}
{{- define "ip.routerServiceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (printf "%s-router" (include "ip.fullname" .) | trunc 63 | trimSuffix "-") .Values.router.serviceAccount.name -}}
{{- else -}}
{{- .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ip.peeringName" -}}
{{- default (include "ip.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "ip.configMapName" -}}
{{- printf "%s-config" (include "ip.fullname" .) -}}
{{- end -}}

{{- define "ip.priceBookConfigMap" -}}
{{- default (include "ip.configMapName" .) .Values.priceBook.existingConfigMap -}}
{{- end -}}

{{- define "ip.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The credential Secrets the operator reads (mounted as volumes), plus rbac.extraSecretNames. */}}
{{- define "ip.secretNames" -}}
{{- $names := list -}}
{{- if .Values.cloudRun.credentials.existingSecret -}}{{- $names = append $names .Values.cloudRun.credentials.existingSecret -}}{{- end -}}
{{- if .Values.lambda.credentials.existingSecret -}}{{- $names = append $names .Values.lambda.credentials.existingSecret -}}{{- end -}}
{{- range .Values.rbac.extraSecretNames -}}{{- $names = append $names . -}}{{- end -}}
{{- $names | uniq | toJson -}}
{{- end -}}

{{/*
The rules the operator needs inside every namespace it places workloads in (a ClusterRole when cluster-wide, a Role
per watched namespace otherwise). Derived from the code: controller/kube.py (status, finalizers, Events),
targets/cluster.py (Deployment + Service), the router's stable ExternalName Service per workload, kopf's own watch
of InferenceWorkloads. No ConfigMap: the router's one ConfigMap lives in the release namespace (the router Role).
*/}}
{{- define "ip.workloadRules" -}}
- apiGroups: [placement.inference.dev]
  resources: [inferenceworkloads]
  # patch: finalizers only (the operator never writes spec); no create, update or delete.
  verbs: [get, list, watch, patch]
- apiGroups: [placement.inference.dev]
  resources: [inferenceworkloads/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
# the model Services' ready pods (router.podsByAddress): one watch, read only
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
# GPUs claimed through DRA (cluster.gpuRequest): the claim template each model Deployment's Pods claim from
- apiGroups: [resource.k8s.io]
  resources: [resourceclaimtemplates]
  verbs: [get, list, create, patch, delete]
# the user's autoscalers that target a model Deployment: the operator then leaves its spec.replicas to them (read only)
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [list]
{{- end -}}

{{/* Peering rules: list/watch the peering kind, get/patch only the release's own peering object. */}}
{{- define "ip.peeringRules" -}}
{{- $resource := .resource -}}
- apiGroups: [kopf.dev]
  resources: [{{ $resource }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ $resource }}]
  resourceNames: [{{ .name | quote }}]
  verbs: [get, patch]
{{- end -}}

{{/* sha256 of what the operator reads only at start-up: the PromQL templates and the operator's settings. */}}
{{- define "ip.configChecksum" -}}
{{- $promql := default (.Files.Get "files/promql.yaml") .Values.promql.content -}}
{{- dict "promql" $promql "operator" .Values.operator "cloudRun" .Values.cloudRun "lambda" .Values.lambda "router" .Values.router | toJson | sha256sum -}}
{{- end -}}

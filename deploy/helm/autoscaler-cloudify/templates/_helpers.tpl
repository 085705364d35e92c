{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a label value.
*/}}
{{- define "autoscaler-cloudify.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name alone when it already contains the chart name,
so `helm install autoscaler-cloudify .` gives objects called `autoscaler-cloudify`.
*/}}
{{- define "autoscaler-cloudify.fullname" -}}
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

{{- define "autoscaler-cloudify.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels put on every object. */}}
{{- define "autoscaler-cloudify.labels" -}}
helm.sh/chart: {{ include "autoscaler-cloudify.chart" . }}
{{ include "autoscaler-cloudify.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cluster-autoscaler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "autoscaler-cloudify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autoscaler-cloudify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "autoscaler-cloudify.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "autoscaler-cloudify.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* DNS name CA dials; the server certificate carries it as a SAN (CA sets TLS ServerName to it). */}}
{{- define "autoscaler-cloudify.serviceHost" -}}
{{- printf "%s.%s.svc" (include "autoscaler-cloudify.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "autoscaler-cloudify.grpcAddress" -}}
{{- if .Values.cloudConfig.address }}
{{- .Values.cloudConfig.address }}
{{- else }}
{{- printf "%s:%d" (include "autoscaler-cloudify.serviceHost" .) (int .Values.service.grpcPort) }}
{{- end }}
{{- end }}

{{/* Secret holding the provider's server certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "autoscaler-cloudify.serverTlsSecret" -}}
{{- default (printf "%s-server-tls" (include "autoscaler-cloudify.fullname" .)) .Values.tls.serverSecret }}
{{- end }}

{{/* Secret holding CA's client certificate (tls.crt, tls.key, ca.crt); mount it into the CA pod. */}}
{{- define "autoscaler-cloudify.clientTlsSecret" -}}
{{- default (printf "%s-client-tls" (include "autoscaler-cloudify.fullname" .)) .Values.tls.clientSecret }}
{{- end }}

{{- define "autoscaler-cloudify.cloudConfigMap" -}}
{{- printf "%s-cloud-config" (include "autoscaler-cloudify.fullname" .) }}
{{- end }}

{{- define "autoscaler-cloudify.credentialsSecret" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else }}
{{- printf "%s-cloudify" (include "autoscaler-cloudify.fullname" .) }}
{{- end }}
{{- end }}

{{/* Issuer that signs the server and client certificates. */}}
{{- define "autoscaler-cloudify.issuerRef" -}}
{{- if .Values.tls.certManager.issuerRef.name }}
name: {{ .Values.tls.certManager.issuerRef.name }}
kind: {{ default "Issuer" .Values.tls.certManager.issuerRef.kind }}
group: {{ default "cert-manager.io" .Values.tls.certManager.issuerRef.group }}
{{- else }}
name: {{ include "autoscaler-cloudify.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end }}
{{- end }}

{{/*
The provider configuration file (docs/configuration.md). grpc and http are owned by the chart, because
ports, probe paths and mounted TLS paths must agree with the Deployment and Service; everything
else comes from .Values.config as written.
*/}}
{{- define "autoscaler-cloudify.providerConfig" -}}
{{- $tlsDir := "/etc/autoscaler-cloudify/tls" -}}
grpc:
  listen: {{ include "autoscaler-cloudify.listen" (list . .Values.containerPorts.grpc) | quote }}
  {{- if .Values.tls.enabled }}
  tls:
    cert_file: {{ $tlsDir }}/tls.crt
    key_file: {{ $tlsDir }}/tls.key
    client_ca_file: {{ $tlsDir }}/ca.crt
  insecure: false
  {{- else }}
  insecure: true
  {{- end }}
http:
  listen: {{ include "autoscaler-cloudify.listen" (list . .Values.containerPorts.http) | quote }}
lease:
  enabled: {{ .Values.leaderElection.enabled }}
  {{- if .Values.leaderElection.enabled }}
  name: {{ include "autoscaler-cloudify.leaseName" . }}
  namespace: {{ .Release.Namespace }}
  duration: {{ .Values.leaderElection.duration }}
  renew_deadline: {{ .Values.leaderElection.renewDeadline }}
  renew_period: {{ .Values.leaderElection.renewPeriod }}
  leader_label: {{ .Values.leaderElection.podLabel | quote }}
  {{- end }}
{{ toYaml .Values.config }}
{{- end }}

{{/* The Lease the replicas elect a leader on. */}}
{{- define "autoscaler-cloudify.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "autoscaler-cloudify.fullname" .) -}}
{{- end }}

{{/* HOST:PORT for a listen address: `[::]` and IPv6 literals keep their brackets, `::` gets them. */}}
{{- define "autoscaler-cloudify.listen" -}}
{{- $root := index . 0 -}}
{{- $port := int (index . 1) -}}
{{- $host := $root.Values.listenAddress | default "[::]" -}}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) -}}
{{- $host = printf "[%s]" $host -}}
{{- end -}}
{{- printf "%s:%d" $host $port -}}
{{- end }}

{{/* Selector of the gRPC Service: the chart's pods, and of them the leader (issue 21). */}}
{{- define "autoscaler-cloudify.leaderSelector" -}}
{{ include "autoscaler-cloudify.selectorLabels" . }}
{{- if .Values.leaderElection.enabled }}
{{ .Values.leaderElection.podLabel }}: "true"
{{- end }}
{{- end }}

{{/* Pods allowed to call gRPC: the user's selector whole, or the chart's client label. */}}
{{- define "autoscaler-cloudify.grpcClientSelector" -}}
{{- if .Values.networkPolicy.grpc.podSelector }}
{{- toYaml .Values.networkPolicy.grpc.podSelector }}
{{- else }}
matchLabels:
  autoscaler-cloudify.io/client: "true"
{{- end }}
{{- end }}

{{/*
The PodDisruptionBudget and the rolling update follow replicaCount (issue 21), as the upstream
cluster-autoscaler chart has them: maxUnavailable 1, Kubernetes' default strategy.
*/}}
{{- define "autoscaler-cloudify.pdbSpec" -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}
{{- $blocks := false }}
{{- if kindIs "string" $pdb.minAvailable }}
{{- $blocks = eq (trimSuffix "%" $pdb.minAvailable) "100" }}
{{- else }}
{{- $blocks = ge (int $pdb.minAvailable) (int .Values.replicaCount) }}
{{- end }}
{{- if $blocks }}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) must be below replicaCount (%d): such a budget refuses every eviction, so `kubectl drain` of a provider's node hangs" $pdb.minAvailable (int .Values.replicaCount)) }}
{{- end }}
minAvailable: {{ $pdb.minAvailable }}
{{- else }}
maxUnavailable: {{ kindIs "invalid" $pdb.maxUnavailable | ternary 1 $pdb.maxUnavailable }}
{{- end }}
{{- end }}

{{- define "autoscaler-cloudify.strategy" -}}
{{- if .Values.strategy }}
{{- toYaml .Values.strategy }}
{{- else }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: {{ div (int .Values.replicaCount) 4 }}
{{- end }}
{{- end }}

{{/* The node groups must be named: no default discovery rule can match the right deployments. */}}
{{- define "autoscaler-cloudify.requireGroups" -}}
{{- $ng := .Values.config.node_groups | default dict -}}
{{- if not (or $ng.static $ng.auto_discovery) }}
{{- fail "set config.node_groups.static (e.g. [\"1:10:k8s-pool-a/workers\"]) or config.node_groups.auto_discovery (e.g. [\"cloudify:label=k8s-cluster=prod\"]): the chart has no default, so the provider never manages deployments you did not name" }}
{{- end }}
{{- end }}

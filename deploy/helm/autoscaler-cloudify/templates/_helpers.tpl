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
The provider configuration file (PLAN Contract 2). grpc and http are owned by the chart, because
ports, probe paths and mounted TLS paths must agree with the Deployment and Service; everything
else comes from .Values.config as written.
*/}}
{{- define "autoscaler-cloudify.providerConfig" -}}
{{- $tlsDir := "/etc/autoscaler-cloudify/tls" -}}
grpc:
  listen: {{ printf "0.0.0.0:%d" (int .Values.containerPorts.grpc) | quote }}
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
  listen: {{ printf "0.0.0.0:%d" (int .Values.containerPorts.http) | quote }}
lease:
  enabled: {{ .Values.leaderElection.enabled }}
  {{- if .Values.leaderElection.enabled }}
  name: {{ include "autoscaler-cloudify.leaseName" . }}
  namespace: {{ .Release.Namespace }}
  duration: {{ .Values.leaderElection.duration }}
  renew_deadline: {{ .Values.leaderElection.renewDeadline }}
  renew_period: {{ .Values.leaderElection.renewPeriod }}
  {{- end }}
{{ toYaml .Values.config }}
{{- end }}

{{/* The Lease the replicas elect a leader on. */}}
{{- define "autoscaler-cloudify.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "autoscaler-cloudify.fullname" .) -}}
{{- end }}

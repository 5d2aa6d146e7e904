{{/* Names */}}
{{- define "feedbackloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "feedbackloop.fullname" -}}
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

{{- define "feedbackloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: call with (dict "ctx" $ "component" "api") */}}
{{- define "feedbackloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "feedbackloop.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "feedbackloop.labels" -}}
helm.sh/chart: {{ include "feedbackloop.chart" .ctx }}
{{ include "feedbackloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: feedbackloop
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The component that serves the gRPC API: the standalone pod, or the api pods. */}}
{{- define "feedbackloop.servingComponent" -}}
{{- if eq .Values.mode "distributed" }}api{{ else }}standalone{{ end }}
{{- end }}

{{- define "feedbackloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "feedbackloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "feedbackloop.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "true" when the standalone pod serves the console beside the API. */}}
{{- define "feedbackloop.consoleBeside" -}}
{{- and .Values.console.enabled (eq .Values.mode "standalone") }}
{{- end }}

{{/* "true" when browsers reach the console over HTTPS (its Ingress has TLS): its cookies are Secure. */}}
{{- define "feedbackloop.consoleSecure" -}}
{{- and .Values.console.ingress.enabled (gt (len .Values.console.ingress.tls) 0) }}
{{- end }}

{{/* The Service and port name the console is reached on. */}}
{{- define "feedbackloop.consoleService" -}}
{{- include "feedbackloop.fullname" . }}{{ if eq .Values.mode "distributed" }}-console{{ end }}
{{- end }}

{{/* The console's HTTP port, from the peers that may reach the gRPC port (networkPolicy.ingressFrom). */}}
{{- define "feedbackloop.consoleIngressRule" -}}
- ports:
    - port: console
      protocol: TCP
  {{- with .Values.networkPolicy.ingressFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The api Service as a client address (the CLI's FEEDBACKLOOP_SERVER). */}}
{{- define "feedbackloop.serverAddress" -}}
{{- printf "%s.%s.svc:%d" (include "feedbackloop.fullname" .) .Release.Namespace (int .Values.server.port) }}
{{- end }}

{{- define "feedbackloop.adminKeySecretName" -}}
{{- default (printf "%s-admin-key" (include "feedbackloop.fullname" .)) .Values.auth.adminKey.existingSecret }}
{{- end }}

{{/*
Values the chart cannot render with. Every template that depends on them includes this, so the
message comes first whatever object is rendered.
*/}}
{{- define "feedbackloop.validate" -}}
{{- if eq .Values.mode "standalone" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount: standalone mode runs exactly one replica (Milvus Lite holds a file lock on its data), got %d. Use mode: distributed with api.replicaCount and worker.replicaCount to scale out." (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.persistence.existingClaim (not .Values.persistence.enabled) }}
{{- fail "persistence.existingClaim: set persistence.enabled: true to use an existing claim" }}
{{- end }}
{{- else }}
{{- if not .Values.database.existingSecret }}
{{- fail "database.existingSecret: distributed mode needs a Secret holding the PostgreSQL URL (key database.secretKey, e.g. postgresql+psycopg://user:password@host:5432/feedbackloop); see examples/distributed.yaml" }}
{{- end }}
{{- if not .Values.milvus.existingSecret }}
{{- fail "milvus.existingSecret: distributed mode needs a Secret holding the Milvus URI (key milvus.uriKey, e.g. http://milvus:19530); see examples/distributed.yaml" }}
{{- end }}
{{- end }}
{{- range $name, $_ := .Values.server.settings }}
{{- if has $name (list "database_url" "milvus_uri" "milvus_token" "milvus_db_name") }}
{{- fail (printf "server.settings.%s: credentials and endpoints come from Secrets (database.existingSecret, milvus.existingSecret) or their own values (milvus.dbName), never from the settings ConfigMap" $name) }}
{{- end }}
{{- if has $name (list "host" "port" "data_dir" "policies_dir" "auto_migrate" "default_project" "max_connection_age_seconds" "shutdown_grace_seconds" "metrics_port" "milvus_collection" "console" "console_port" "console_secure_cookies") }}
{{- fail (printf "server.settings.%s: set by the chart itself (see server.*, milvus.*, metrics.* and console.* in the chart README)" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled: needs metrics.enabled: true (the ServiceMonitor scrapes the metrics port)" }}
{{- end }}
{{- if and .Values.grpcRoute.enabled (not .Values.grpcRoute.parentRefs) }}
{{- fail "grpcRoute.parentRefs: a GRPCRoute needs at least one parent Gateway" }}
{{- end }}
{{- end }}

{{/* The ConfigMap of non-secret settings, hashed into checksum/config. */}}
{{- define "feedbackloop.settings" -}}
FEEDBACKLOOP_HOST: "0.0.0.0"
FEEDBACKLOOP_PORT: {{ .Values.server.port | quote }}
FEEDBACKLOOP_DATA_DIR: "/data"
FEEDBACKLOOP_DEFAULT_PROJECT: {{ .Values.server.defaultProject | quote }}
FEEDBACKLOOP_MAX_CONNECTION_AGE_SECONDS: {{ .Values.server.maxConnectionAgeSeconds | quote }}
FEEDBACKLOOP_SHUTDOWN_GRACE_SECONDS: {{ .Values.server.shutdownGraceSeconds | quote }}
{{- /* Policies are applied by the policy hook Job, never from files baked into the image. */}}
FEEDBACKLOOP_POLICIES_DIR: ""
FEEDBACKLOOP_AUTO_MIGRATE: {{ ternary "false" "true" (eq .Values.mode "distributed") | quote }}
FEEDBACKLOOP_MILVUS_COLLECTION: {{ .Values.milvus.collection | quote }}
{{- with .Values.milvus.dbName }}
FEEDBACKLOOP_MILVUS_DB_NAME: {{ . | quote }}
{{- end }}
{{- if .Values.metrics.enabled }}
FEEDBACKLOOP_METRICS_PORT: {{ .Values.metrics.port | quote }}
{{- end }}
{{- /* The console is a way in: on only when asked for, and in distributed mode a Deployment of its own. */}}
FEEDBACKLOOP_CONSOLE: {{ ternary "on" "off" (include "feedbackloop.consoleBeside" . | eq "true") | quote }}
FEEDBACKLOOP_CONSOLE_PORT: {{ .Values.console.port | quote }}
{{- if and (eq (include "feedbackloop.consoleBeside" .) "true") (include "feedbackloop.consoleSecure" . | eq "true") }}
FEEDBACKLOOP_CONSOLE_SECURE_COOKIES: "true"
{{- end }}
{{- range $name, $value := .Values.server.settings }}
FEEDBACKLOOP_{{ upper $name }}: {{ $value | toString | quote }}
{{- end }}
OTEL_SERVICE_NAME: {{ default (include "feedbackloop.fullname" .) .Values.otel.serviceName | quote }}
{{- if .Values.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .Values.otel.endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ .Values.otel.protocol | quote }}
{{- end }}
{{- end }}

{{/*
The Secrets the pods read, and what the cluster holds in them at install or upgrade time
(`lookup`; empty when rendering offline), hashed into checksum/secret.
*/}}
{{- define "feedbackloop.secretInputs" -}}
{{- $names := list (include "feedbackloop.adminKeySecretName" .) }}
{{- if eq .Values.mode "distributed" }}
{{- $names = append $names .Values.database.existingSecret }}
{{- $names = append $names .Values.milvus.existingSecret }}
{{- end }}
{{- range $name := uniq $names }}
{{ $name }}: {{ (lookup "v1" "Secret" $.Release.Namespace $name).data | toJson }}
{{- end }}
database: {{ printf "%s/%s" .Values.database.existingSecret .Values.database.secretKey }}
milvus: {{ printf "%s/%s/%s" .Values.milvus.existingSecret .Values.milvus.uriKey .Values.milvus.tokenKey }}
adminKey: {{ printf "%s/%s" (include "feedbackloop.adminKeySecretName" .) .Values.auth.adminKey.secretKey }}
{{- end }}

{{/* Credentials, only ever as secretKeyRef. */}}
{{- define "feedbackloop.secretEnv" -}}
{{- if eq .Values.mode "distributed" }}
- name: FEEDBACKLOOP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
- name: FEEDBACKLOOP_MILVUS_URI
  valueFrom:
    secretKeyRef:
      name: {{ .Values.milvus.existingSecret }}
      key: {{ .Values.milvus.uriKey }}
{{- if .Values.milvus.tokenKey }}
- name: FEEDBACKLOOP_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.milvus.existingSecret }}
      key: {{ .Values.milvus.tokenKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* The bootstrap admin key, for `keys ensure` and for CLI clients. Call with (dict "ctx" $ "name" "ENV_NAME"). */}}
{{- define "feedbackloop.adminKeyEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "feedbackloop.adminKeySecretName" .ctx }}
      key: {{ .ctx.Values.auth.adminKey.secretKey }}
{{- end }}

{{/* Environment of every server container: downward API, OTel resource, secrets, extras. Call with (dict "ctx" $ "role" "api"). */}}
{{- define "feedbackloop.serverEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "feedbackloop.resourceAttributes" . | quote }}
{{- with (include "feedbackloop.secretEnv" .ctx | trim) }}
{{ . }}
{{- end }}
{{- with .ctx.Values.server.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "feedbackloop.resourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" (printf "feedbackloop.role=%s" .role) (printf "service.version=%s" .ctx.Chart.AppVersion) }}
{{- range $key, $value := .ctx.Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key (toString $value)) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}

{{/* checksum/config and checksum/secret pod annotations */}}
{{- define "feedbackloop.checksums" -}}
checksum/config: {{ include "feedbackloop.settings" . | sha256sum }}
checksum/secret: {{ include "feedbackloop.secretInputs" . | sha256sum }}
{{- end }}

{{/* Probes: native gRPC on grpc.health.v1.Health. */}}
{{- define "feedbackloop.probes" -}}
{{- $port := int .Values.server.port }}
{{- range $kind := list "startup" "liveness" "readiness" }}
{{- $probe := index $.Values.probes $kind }}
{{- if $probe.enabled }}
{{ $kind }}Probe:
  grpc:
    port: {{ $port }}
    {{- if $probe.service }}
    service: {{ $probe.service | quote }}
    {{- end }}
  initialDelaySeconds: {{ $probe.initialDelaySeconds }}
  periodSeconds: {{ $probe.periodSeconds }}
  timeoutSeconds: {{ $probe.timeoutSeconds }}
  failureThreshold: {{ $probe.failureThreshold }}
{{- end }}
{{- end }}
{{- end }}

{{- define "feedbackloop.ports" -}}
ports:
  - name: grpc
    containerPort: {{ .Values.server.port }}
    protocol: TCP
  {{- if .Values.metrics.enabled }}
  - name: metrics
    containerPort: {{ .Values.metrics.port }}
    protocol: TCP
  {{- end }}
  {{- if eq (include "feedbackloop.consoleBeside" .) "true" }}
  - name: console
    containerPort: {{ .Values.console.port }}
    protocol: TCP
  {{- end }}
{{- end }}

{{/* Pod-level fields shared by every feedbackloop pod. */}}
{{- define "feedbackloop.podCommon" -}}
serviceAccountName: {{ include "feedbackloop.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Call with (dict "ctx" $ "component" "api"). */}}
{{- define "feedbackloop.topologySpread" -}}
{{- if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range .ctx.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "feedbackloop.selectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "feedbackloop.containerCommon" -}}
image: {{ include "feedbackloop.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* /tmp is the only writable path besides the data directory. */}}
{{- define "feedbackloop.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "feedbackloop.terminationGrace" -}}
{{- /* The server exits at most about 3 s after its grace period; the rest is margin for the kubelet. */}}
{{- add (int (ceil .Values.server.shutdownGraceSeconds)) 15 }}
{{- end }}

{{/*
The api and worker roles of distributed mode: one image, the role chosen by `serve --role`.
Call with (dict "ctx" $ "role" "api").
*/}}
{{- define "feedbackloop.roleDeployment" -}}
{{- $ctx := .ctx }}
{{- $role := .role }}
{{- $values := index $ctx.Values $role }}
{{- $fullname := include "feedbackloop.fullname" $ctx }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}-{{ $role }}
  labels:
    {{- include "feedbackloop.labels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
spec:
  {{- if not $values.autoscaling.enabled }}
  replicas: {{ $values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "feedbackloop.selectorLabels" (dict "ctx" $ctx "component" $role) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "feedbackloop.labels" (dict "ctx" $ctx "component" $role) | nindent 8 }}
        {{- with $ctx.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "feedbackloop.checksums" $ctx | nindent 8 }}
        {{- with $ctx.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "feedbackloop.podCommon" $ctx | nindent 6 }}
      {{- include "feedbackloop.topologySpread" (dict "ctx" $ctx "component" $role) | trim | nindent 6 }}
      terminationGracePeriodSeconds: {{ include "feedbackloop.terminationGrace" $ctx }}
      containers:
        - name: feedbackloop
          {{- include "feedbackloop.containerCommon" $ctx | nindent 10 }}
          args: ["serve", "--role", {{ $role | quote }}]
          {{- include "feedbackloop.ports" $ctx | nindent 10 }}
          envFrom:
            - configMapRef:
                name: {{ $fullname }}-settings
          env:
            {{- include "feedbackloop.serverEnv" (dict "ctx" $ctx "role" $role) | nindent 12 }}
          {{- include "feedbackloop.probes" $ctx | trim | nindent 10 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /data
            - name: tmp
              mountPath: /tmp
      volumes:
        {{- include "feedbackloop.tmpVolume" $ctx | nindent 8 }}
        # The data directory holds nothing durable in distributed mode (state is in
        # PostgreSQL and Milvus); it stays writable for the server's scratch files.
        - name: data
          emptyDir:
            sizeLimit: 1Gi
{{- end }}

{{- define "feedbackloop.roleAutoscaler" -}}
{{- $values := index .ctx.Values .role }}
{{- if $values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "feedbackloop.fullname" .ctx }}-{{ .role }}
  labels:
    {{- include "feedbackloop.labels" (dict "ctx" .ctx "component" .role) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "feedbackloop.fullname" .ctx }}-{{ .role }}
  minReplicas: {{ $values.autoscaling.minReplicas }}
  maxReplicas: {{ $values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{- define "feedbackloop.roleDisruptionBudget" -}}
{{- $values := index .ctx.Values .role }}
{{- if $values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "feedbackloop.fullname" .ctx }}-{{ .role }}
  labels:
    {{- include "feedbackloop.labels" (dict "ctx" .ctx "component" .role) | nindent 4 }}
spec:
  maxUnavailable: {{ $values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "feedbackloop.selectorLabels" (dict "ctx" .ctx "component" .role) | nindent 6 }}
{{- end }}
{{- end }}

{{/* The migration Job's environment, inline: pre-install runs before the settings ConfigMap exists. */}}
{{- define "feedbackloop.hookEnv" -}}
- name: FEEDBACKLOOP_DATA_DIR
  value: /tmp
- name: FEEDBACKLOOP_DEFAULT_PROJECT
  value: {{ .Values.server.defaultProject | quote }}
- name: FEEDBACKLOOP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end }}

{{/* A CLI client of the api Service with the admin key. */}}
{{- define "feedbackloop.clientEnv" -}}
- name: FEEDBACKLOOP_SERVER
  value: {{ include "feedbackloop.serverAddress" . | quote }}
{{ include "feedbackloop.adminKeyEnv" (dict "ctx" . "name" "FEEDBACKLOOP_API_KEY") }}
{{- end }}

{{/* Policy files as a ConfigMap's data, hashed into checksum/policies. */}}
{{- define "feedbackloop.policyFiles" -}}
{{- range $name, $content := .Values.policies.files }}
{{ $name }}: {{ $content | quote }}
{{- end }}
{{- end }}

{{/*
One subPath mount per file: a directory mount of a ConfigMap also holds the same files under
`..<timestamp>/`, which a recursive policy loader would read twice.
*/}}
{{- define "feedbackloop.policyMounts" -}}
- name: tmp
  mountPath: /tmp
{{- range $name, $_ := .Values.policies.files }}
- name: policies
  mountPath: /policies/{{ $name }}
  subPath: {{ $name }}
  readOnly: true
{{- end }}
{{- end }}

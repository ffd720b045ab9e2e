{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "flowlet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, unless it already contains the chart name.
Truncated to 63 characters (DNS label limit of some fields).
*/}}
{{- define "flowlet.fullname" -}}
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

{{- define "flowlet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels for every object. */}}
{{- define "flowlet.labels" -}}
helm.sh/chart: {{ include "flowlet.chart" . }}
{{ include "flowlet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flowlet
{{- end }}

{{/* Labels that identify this release's pods (server and migration Job alike). */}}
{{- define "flowlet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowlet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The API server pods only: the Service, PDB, HPA and topology spreading select these, so a
migration Job's pod (component "migrate") never receives traffic or counts as available.
*/}}
{{- define "flowlet.serverSelectorLabels" -}}
{{ include "flowlet.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "flowlet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowlet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "flowlet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Name of the Secret the pods read: the operator's existingSecret, or the chart's own. */}}
{{- define "flowlet.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "flowlet.fullname" . }}
{{- end }}
{{- end }}

{{/*
Environment of the server and of the migration Job (ConfigMap data). The fixed keys make the
pods production pods that never migrate on start; .Values.config adds the rest.
*/}}
{{- define "flowlet.configData" -}}
{{- $fixed := dict
      "FLOWLET_ENV" "production"
      "FLOWLET__SERVER__BIND" "0.0.0.0:8080"
      "FLOWLET__LOG__FORMAT" "json"
      "FLOWLET__DATABASE__MIGRATE_ON_START" "false" }}
{{- $secretKeys := list
      "FLOWLET__DATABASE__URL" "FLOWLET__REDIS__URL" "FLOWLET__AUTH__JWT_SECRET"
      "FLOWLET__AUTH__API_KEY_SECRET" "FLOWLET__KYC__HASH_KEY" "FLOWLET__SMTP__URL"
      "FLOWLET__CARDS__ENCRYPTION_KEY" }}
{{- range $key, $value := .Values.config }}
{{- if hasKey $fixed $key }}
{{- fail (printf "config.%s is set by the chart (%s=%s) and cannot be overridden" $key $key (get $fixed $key)) }}
{{- end }}
{{- if or (has $key $secretKeys) (hasPrefix "FLOWLET__KYC__ENCRYPTION_KEYS__" $key) (hasPrefix "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__" $key) }}
{{- fail (printf "config.%s is a secret: put it in the Secret (existingSecret or secrets.*), not in the ConfigMap" $key) }}
{{- end }}
{{- if not (hasPrefix "FLOWLET__" $key) }}
{{- fail (printf "config.%s: keys must be FLOWLET__SECTION__KEY environment variables" $key) }}
{{- end }}
{{- end }}
{{- range $key, $value := merge (dict) $fixed .Values.config }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Secret data (base64) built from .Values.secrets, for when the chart manages the Secret
(existingSecret is empty). Every required value missing or unsafe fails the render with a
message naming the value.
*/}}
{{- define "flowlet.secretData" -}}
{{- $s := .Values.secrets | default dict }}
{{- $missing := list }}
{{- range $k := list "databaseUrl" "redisUrl" "jwtSecret" "apiKeySecret" "kycHashKey" "kycEncryptionKeyId" }}
{{- if not (get $s $k) }}{{- $missing = append $missing (printf "secrets.%s" $k) }}{{- end }}
{{- end }}
{{- if not $s.kycEncryptionKeys }}{{- $missing = append $missing "secrets.kycEncryptionKeys" }}{{- end }}
{{- if $missing }}
{{- fail (printf "existingSecret is empty, so the chart creates the Secret and needs: %s. Set them (e.g. -f my-secret-values.yaml), or create the Secret yourself and set existingSecret (see README, Deploy to Kubernetes)." (join ", " $missing)) }}
{{- end }}
{{- range $k := list "jwtSecret" "apiKeySecret" "kycHashKey" }}
{{- if lt (len (get $s $k | toString)) 32 }}
{{- fail (printf "secrets.%s must be at least 32 bytes (FLOWLET_ENV=production refuses shorter secrets); e.g. openssl rand -base64 48" $k) }}
{{- end }}
{{- end }}
{{- if not (hasKey $s.kycEncryptionKeys $s.kycEncryptionKeyId) }}
{{- fail (printf "secrets.kycEncryptionKeyId %q is not a key of secrets.kycEncryptionKeys" $s.kycEncryptionKeyId) }}
{{- end }}
{{- if eq $s.kycEncryptionKeyId "dev" }}
{{- fail "secrets.kycEncryptionKeyId must not be \"dev\": production drops the development key" }}
{{- end }}
FLOWLET__DATABASE__URL: {{ $s.databaseUrl | toString | b64enc | quote }}
FLOWLET__REDIS__URL: {{ $s.redisUrl | toString | b64enc | quote }}
FLOWLET__AUTH__JWT_SECRET: {{ $s.jwtSecret | toString | b64enc | quote }}
FLOWLET__AUTH__API_KEY_SECRET: {{ $s.apiKeySecret | toString | b64enc | quote }}
FLOWLET__KYC__HASH_KEY: {{ $s.kycHashKey | toString | b64enc | quote }}
FLOWLET__KYC__ENCRYPTION_KEY_ID: {{ $s.kycEncryptionKeyId | toString | b64enc | quote }}
{{- range $kid, $key := $s.kycEncryptionKeys }}
{{- if ne $kid (lower $kid) }}
{{- fail (printf "secrets.kycEncryptionKeys: key id %q must be lower case (environment variable names are read lower-cased)" $kid) }}
{{- end }}
{{- if ne (len (b64dec (toString $key))) 32 }}
{{- fail (printf "secrets.kycEncryptionKeys.%s must be base64 of 32 random bytes (openssl rand -base64 32)" $kid) }}
{{- end }}
FLOWLET__KYC__ENCRYPTION_KEYS__{{ upper $kid }}: {{ $key | toString | b64enc | quote }}
{{- end }}
{{- range $kid, $secret := $s.jwtPreviousSecrets }}
FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__{{ upper $kid }}: {{ $secret | toString | b64enc | quote }}
{{- end }}
{{- with $s.smtpUrl }}
FLOWLET__SMTP__URL: {{ . | toString | b64enc | quote }}
{{- end }}
{{- with $s.cardsEncryptionKey }}
FLOWLET__CARDS__ENCRYPTION_KEY: {{ . | toString | b64enc | quote }}
{{- end }}
{{- end }}

{{/* Pod-level securityContext shared by the server and the migration Job. */}}
{{- define "flowlet.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{/* Container-level securityContext shared by the server and the migration Job. */}}
{{- define "flowlet.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end }}

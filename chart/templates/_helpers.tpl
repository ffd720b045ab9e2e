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

{{/* Any other image value ({repository, tag, digest}): repository@digest or repository:tag. */}}
{{- define "flowlet.otherImage" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (toString .tag) }}
{{- end }}
{{- end }}

{{/* Labels of the helm-test pod: not the release's selector labels, so neither the Service nor
the release's NetworkPolicy selects it. */}}
{{- define "flowlet.testLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: flowlet
{{- end }}

{{/*
CPUs of a server pod as a whole number: resources.limits.cpu, else requests.cpu, rounded up
("500m" -> 1, "1500m" -> 2, "2" -> 2). 0 when neither is set.
*/}}
{{- define "flowlet.cpuCores" -}}
{{- $cpu := "" }}
{{- $r := .Values.resources | default dict }}
{{- with $r.requests }}{{- with .cpu }}{{- $cpu = . }}{{- end }}{{- end }}
{{- with $r.limits }}{{- with .cpu }}{{- $cpu = . }}{{- end }}{{- end }}
{{- $s := toString $cpu }}
{{- if eq $s "" }}
{{- 0 }}
{{- else }}
{{- $millis := 0 }}
{{- if hasSuffix "m" $s }}
{{- $millis = int (trimSuffix "m" $s) }}
{{- else }}
{{- $millis = int (mulf (float64 $s) 1000) }}
{{- end }}
{{- max 1 (div (add $millis 999) 1000) }}
{{- end }}
{{- end }}

{{/* FLOWLET__SERVER__WORKERS: server.workers, or the pod's CPUs when 0. */}}
{{- define "flowlet.workers" -}}
{{- $n := int .Values.server.workers }}
{{- if eq $n 0 }}{{- $n = int (include "flowlet.cpuCores" .) }}{{- end }}
{{- $n }}
{{- end }}

{{/* FLOWLET__SERVER__RUNTIME_THREADS: server.runtimeThreads, or the workers when 0. */}}
{{- define "flowlet.runtimeThreads" -}}
{{- $n := int .Values.server.runtimeThreads }}
{{- if eq $n 0 }}{{- $n = int (include "flowlet.workers" .) }}{{- end }}
{{- $n }}
{{- end }}

{{/*
The most server pods a rollout can run at once: HPA maxReplicas (or replicaCount) plus the
rolling update's maxSurge (a percentage is rounded up, as Kubernetes does).
*/}}
{{- define "flowlet.peakPods" -}}
{{- $pods := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}{{- $pods = int .Values.autoscaling.maxReplicas }}{{- end }}
{{- $surge := toString .Values.rollingUpdate.maxSurge }}
{{- if hasSuffix "%" $surge }}
{{- $surge = div (add (mul $pods (int (trimSuffix "%" $surge))) 99) 100 }}
{{- end }}
{{- add $pods (int $surge) }}
{{- end }}

{{/*
Checks across values that a schema cannot express; each failure names the values to change.
Included once, from the Deployment.
*/}}
{{- define "flowlet.validate" -}}
{{- /* Threads: never more than the pod's CPUs. */ -}}
{{- $cores := int (include "flowlet.cpuCores" .) }}
{{- $workers := int (include "flowlet.workers" .) }}
{{- $threads := int (include "flowlet.runtimeThreads" .) }}
{{- if eq $cores 0 }}
{{- fail "resources.requests.cpu (or resources.limits.cpu) must be set: the server's threads (server.workers, server.runtimeThreads) are sized from it" }}
{{- end }}
{{- if or (gt $workers $cores) (gt $threads $cores) }}
{{- fail (printf "server.workers (%d) and server.runtimeThreads (%d) must not exceed the pod's %d CPU(s) (resources.limits.cpu, else requests.cpu, rounded up); raise the CPU or lower them" $workers $threads $cores) }}
{{- end }}
{{- /* The connection budget. */ -}}
{{- $db := .Values.database }}
{{- $peak := int (include "flowlet.peakPods" .) }}
{{- $perPod := add (int $db.poolSize) (int $db.workerPoolSize) 2 }}
{{- $migration := ternary 1 0 .Values.migrations.enabled }}
{{- $needed := add (mul $perPod $peak) $migration }}
{{- if gt $needed (int $db.maxConnections) }}
{{- fail (printf "database connections: (database.poolSize %d + database.workerPoolSize %d + 2) x %d pods (autoscaling.maxReplicas or replicaCount, plus rollingUpdate.maxSurge) + %d (migration Job) = %d, above database.maxConnections %d. Lower the pools or the replicas, or raise max_connections (and database.maxConnections); PgBouncer only in session mode (README, PgBouncer)" (int $db.poolSize) (int $db.workerPoolSize) $peak $migration $needed (int $db.maxConnections)) }}
{{- end }}
{{- /* Termination: preStop sleep, then the HTTP drain, then stopping the workers. */ -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $drain := add (int .Values.preStopSleepSeconds) (int .Values.server.shutdownTimeoutSeconds) 10 }}
{{- if lt $grace $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds (%d) + server.shutdownTimeoutSeconds (%d) + 10 = %d, or in-flight requests are killed" $grace (int .Values.preStopSleepSeconds) (int .Values.server.shutdownTimeoutSeconds) $drain) }}
{{- end }}
{{- if and .Values.backups.cloudnativepg.enabled (not .Values.backups.cloudnativepg.cluster) }}
{{- fail "backups.cloudnativepg.enabled needs backups.cloudnativepg.cluster (the CloudNativePG Cluster's name)" }}
{{- end }}
{{- if and .Values.backups.cloudnativepg.enabled (eq .Values.backups.cloudnativepg.method "plugin") (not .Values.backups.cloudnativepg.pluginName) }}
{{- fail "backups.cloudnativepg.method plugin needs backups.cloudnativepg.pluginName" }}
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
      "FLOWLET__DATABASE__MIGRATE_ON_START" "false"
      "FLOWLET__DATABASE__POOL_SIZE" (toString (int .Values.database.poolSize))
      "FLOWLET__DATABASE__WORKER_POOL_SIZE" (toString (int .Values.database.workerPoolSize)) }}
{{- $derived := dict
      "FLOWLET__DATABASE__POOL_SIZE" "database.poolSize"
      "FLOWLET__DATABASE__WORKER_POOL_SIZE" "database.workerPoolSize"
      "FLOWLET__SERVER__WORKERS" "server.workers"
      "FLOWLET__SERVER__RUNTIME_THREADS" "server.runtimeThreads"
      "FLOWLET__SERVER__SHUTDOWN_TIMEOUT_SECS" "server.shutdownTimeoutSeconds"
      "FLOWLET__AUTH__MAX_CONCURRENT_HASHES" "auth.maxConcurrentHashes"
      "FLOWLET__DATABASE__MIGRATION_LOCK_WAIT_MS" "migrations.lockWaitMs"
      "FLOWLET__DATABASE__MIGRATION_STATEMENT_TIMEOUT_MS" "migrations.statementTimeoutMs"
      "FLOWLET__DATABASE__MIGRATION_LOCK_TIMEOUT_MS" "migrations.lockTimeoutMs" }}
{{- $secretKeys := list
      "FLOWLET__DATABASE__URL" "FLOWLET__DATABASE__REPLICA_URL" "FLOWLET__REDIS__URL"
      "FLOWLET__AUTH__JWT_SECRET" "FLOWLET__AUTH__API_KEY_SECRET" "FLOWLET__KYC__HASH_KEY"
      "FLOWLET__SMTP__URL" "FLOWLET__CARDS__HASH_KEY" "FLOWLET__CARDS__CVC_KEY" }}
{{- $secretPrefixes := list
      "FLOWLET__KYC__ENCRYPTION_KEYS__" "FLOWLET__CARDS__ENCRYPTION_KEYS__"
      "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__" }}
{{- range $key, $value := .Values.config }}
{{- if hasKey $derived $key }}
{{- fail (printf "config.%s is derived by the chart: set %s instead" $key (get $derived $key)) }}
{{- end }}
{{- if hasKey $fixed $key }}
{{- fail (printf "config.%s is set by the chart (%s=%s) and cannot be overridden" $key $key (get $fixed $key)) }}
{{- end }}
{{- $prefixed := false }}
{{- range $prefix := $secretPrefixes }}
{{- if hasPrefix $prefix $key }}{{- $prefixed = true }}{{- end }}
{{- end }}
{{- if or (has $key $secretKeys) $prefixed }}
{{- fail (printf "config.%s is a secret: put it in the Secret (existingSecret or secrets.*), not in the ConfigMap" $key) }}
{{- end }}
{{- if eq $key "FLOWLET__CARDS__ENCRYPTION_KEY" }}
{{- fail "config.FLOWLET__CARDS__ENCRYPTION_KEY is not a setting (the app refuses unknown keys): card numbers are sealed under FLOWLET__CARDS__ENCRYPTION_KEYS__<KID> and FLOWLET__CARDS__ENCRYPTION_KEY_ID, which belong in the Secret (secrets.cardEncryptionKeys, secrets.cardEncryptionKeyId)" }}
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
{{- range $k := list "cardHashKey" "cardCvcKey" "cardEncryptionKeyId" }}
{{- if not (get $s $k) }}{{- $missing = append $missing (printf "secrets.%s" $k) }}{{- end }}
{{- end }}
{{- if not $s.cardEncryptionKeys }}{{- $missing = append $missing "secrets.cardEncryptionKeys" }}{{- end }}
{{- if $missing }}
{{- fail (printf "existingSecret is empty, so the chart creates the Secret and needs: %s. Set them (e.g. -f my-secret-values.yaml), or create the Secret yourself and set existingSecret (see README, Deploy to Kubernetes)." (join ", " $missing)) }}
{{- end }}
{{- range $k := list "jwtSecret" "apiKeySecret" "kycHashKey" "cardHashKey" "cardCvcKey" }}
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
{{- if eq (toString $s.cardCvcKey) (toString $s.cardHashKey) }}
{{- fail "secrets.cardCvcKey must differ from secrets.cardHashKey (the app refuses the same key for both); e.g. openssl rand -base64 48" }}
{{- end }}
{{- if not (hasKey $s.cardEncryptionKeys $s.cardEncryptionKeyId) }}
{{- fail (printf "secrets.cardEncryptionKeyId %q is not a key of secrets.cardEncryptionKeys" $s.cardEncryptionKeyId) }}
{{- end }}
{{- if eq $s.cardEncryptionKeyId "dev" }}
{{- fail "secrets.cardEncryptionKeyId must not be \"dev\": production refuses the development card key" }}
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
FLOWLET__CARDS__HASH_KEY: {{ $s.cardHashKey | toString | b64enc | quote }}
FLOWLET__CARDS__CVC_KEY: {{ $s.cardCvcKey | toString | b64enc | quote }}
FLOWLET__CARDS__ENCRYPTION_KEY_ID: {{ $s.cardEncryptionKeyId | toString | b64enc | quote }}
{{- range $kid, $key := $s.cardEncryptionKeys }}
{{- if ne $kid (lower $kid) }}
{{- fail (printf "secrets.cardEncryptionKeys: key id %q must be lower case (environment variable names are read lower-cased)" $kid) }}
{{- end }}
{{- if ne (len (b64dec (toString $key))) 32 }}
{{- fail (printf "secrets.cardEncryptionKeys.%s must be base64 of 32 random bytes (openssl rand -base64 32)" $kid) }}
{{- end }}
FLOWLET__CARDS__ENCRYPTION_KEYS__{{ upper $kid }}: {{ $key | toString | b64enc | quote }}
{{- end }}
{{- with $s.smtpUrl }}
FLOWLET__SMTP__URL: {{ . | toString | b64enc | quote }}
{{- end }}
{{- with $s.databaseReplicaUrl }}
FLOWLET__DATABASE__REPLICA_URL: {{ . | toString | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
The migration hook's only secret: where FLOWLET__DATABASE__URL comes from, as
{"name": ..., "key": ...}. migrations.databaseUrlSecret.name wins; else the operator's
existingSecret; else the hook Secret "<fullname>-migrate" (chart-managed secrets).
*/}}
{{- define "flowlet.migrationUrlRef" -}}
{{- $ref := .Values.migrations.databaseUrlSecret }}
{{- if $ref.name }}
{{- toJson (dict "name" $ref.name "key" $ref.key) }}
{{- else if .Values.existingSecret }}
{{- toJson (dict "name" .Values.existingSecret "key" $ref.key) }}
{{- else }}
{{- toJson (dict "name" (printf "%s-migrate" (include "flowlet.fullname" .)) "key" "FLOWLET__DATABASE__URL") }}
{{- end }}
{{- end }}

{{/* Whether the chart renders the hook Secret holding only the migration's database URL. */}}
{{- define "flowlet.migrationHookSecret" -}}
{{- if and (not .Values.migrations.databaseUrlSecret.name) (not .Values.existingSecret) }}true{{- end }}
{{- end }}

{{/* NetworkPolicy peers of the cluster DNS (release policy and test policy alike). */}}
{{- define "flowlet.dnsPeers" -}}
{{- $dns := .Values.networkPolicy.egress.dns }}
- namespaceSelector:
    {{- toYaml $dns.namespaceSelector | nindent 4 }}
  {{- with $dns.podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- range $dns.nodeLocalCidrs }}
- ipBlock:
    cidr: {{ . }}
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

{{/*
Names and labels (the usual helpers), then what the per-service templates share: the list of
services, each service's effective settings, the config file and the checks that fail early.
*/}}

{{- define "ai-bot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already holds the chart name; 63 chars (DNS label). */}}
{{- define "ai-bot.fullname" -}}
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

{{- define "ai-bot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ai-bot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ai-bot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ai-bot.labels" -}}
helm.sh/chart: {{ include "ai-bot.chart" . }}
{{ include "ai-bot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ai-bot
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "core-llm"). */}}
{{- define "ai-bot.componentLabels" -}}
{{ include "ai-bot.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ai-bot.componentSelectorLabels" -}}
{{ include "ai-bot.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* <fullname>-<component>, kept within 63 characters. */}}
{{- define "ai-bot.componentFullname" -}}
{{- printf "%s-%s" (include "ai-bot.fullname" .root | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{/* ServiceAccount of a component; call with (dict "root" $ "component" "core-llm"). */}}
{{- define "ai-bot.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "ai-bot.componentFullname" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
The services: files/services.yaml, generated from the project's one table of services
(libs/aibot-common/src/aibot_common/catalog.py) because templates cannot import Python. Each entry:
name (component label, Deployment name suffix), key (its values block), port, module, public (serves
a webhook), platform (an ingress's platform), gpu (has the CUDA image). Every per-service template
ranges over this list; call with the root context.
*/}}
{{- define "ai-bot.serviceList" -}}
{{ .Files.Get "files/services.yaml" }}
{{- end }}

{{/* Whether a service runs: its own enabled flag, and for an ingress its platform's. */}}
{{- define "ai-bot.serviceEnabled" -}}
{{- $values := index .root.Values .svc.key -}}
{{- $on := $values.enabled -}}
{{- if .svc.platform }}{{ $on = and $on (index .root.Values.config .svc.platform).enabled }}{{ end -}}
{{- if $on }}true{{ end -}}
{{- end }}

{{/* <registry>/<repository>:<tag>; call with (dict "root" $ "image" <image block> "suffix" "-cuda"). */}}
{{- define "ai-bot.image" -}}
{{- $tag := .image.tag | default (printf "%s%s" (.root.Values.image.tag | default .root.Chart.AppVersion) (.suffix | default "")) -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .image.repository $tag }}
{{- end }}

{{/*
The effective settings of one service as YAML (read back with fromYaml): global defaults with the
service's overrides, and for a gpu service (asr-worker) with gpu.enabled the GPU pool's image, resources,
scheduling and replica bounds. Shallow merges with `set`, because sprig's merge functions skip
false and 0 and so could not turn a default off.
*/}}
{{- define "ai-bot.component" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $v := index $root.Values $svc.key -}}
{{- $gpu := and $svc.gpu $v.gpu.enabled -}}
{{- $autoscaling := deepCopy $root.Values.autoscaling -}}
{{- range $k, $x := $v.autoscaling }}{{ $_ := set $autoscaling $k $x }}{{ end -}}
{{- $image := include "ai-bot.image" (dict "root" $root "image" $v.image) -}}
{{- $resources := deepCopy $v.resources -}}
{{- $nodeSelector := $v.nodeSelector | default $root.Values.nodeSelector -}}
{{- $tolerations := $v.tolerations | default $root.Values.tolerations -}}
{{- $affinity := $v.affinity | default $root.Values.affinity -}}
{{- $runtimeClassName := "" -}}
{{- if $gpu -}}
{{- $runtimeClassName = $v.gpu.runtimeClassName -}}
{{- range $k, $x := $v.gpu.autoscaling }}{{ $_ := set $autoscaling $k $x }}{{ end -}}
{{- $image = include "ai-bot.image" (dict "root" $root "image" $v.gpu.image "suffix" "-cuda") -}}
{{- $resources = deepCopy $v.gpu.resources -}}
{{- $limits := $resources.limits | default dict -}}
{{- $_ := set $limits $v.gpu.resourceName $v.gpu.count -}}
{{- $_ := set $resources "limits" $limits -}}
{{- $nodeSelector = $v.gpu.nodeSelector -}}
{{- $tolerations = $v.gpu.tolerations -}}
{{- $affinity = $v.gpu.affinity -}}
{{- end -}}
name: {{ $svc.name }}
fullname: {{ include "ai-bot.componentFullname" (dict "root" $root "component" $svc.name) }}
port: {{ $svc.port }}
module: {{ $svc.module }}
gpu: {{ $gpu }}
image: {{ $image }}
replicaCount: {{ $v.replicaCount }}
autoscaling: {{- toYaml $autoscaling | nindent 2 }}
resources: {{- toYaml $resources | nindent 2 }}
nodeSelector: {{- toYaml ($nodeSelector | default dict) | nindent 2 }}
tolerations: {{- toYaml ($tolerations | default list) | nindent 2 }}
affinity: {{- toYaml ($affinity | default dict) | nindent 2 }}
runtimeClassName: {{ $runtimeClassName | quote }}
extraEnv: {{- toYaml ($v.extraEnv | default list) | nindent 2 }}
{{- end }}

{{- define "ai-bot.secretName" -}}
{{- .Values.existingSecret | default (include "ai-bot.fullname" .) }}
{{- end }}

{{- define "ai-bot.kafkaBootstrap" -}}
{{- if .Values.kafka.internal.enabled }}
{{- printf "%s:9092" (include "ai-bot.componentFullname" (dict "root" . "component" "kafka")) }}
{{- else }}
{{- .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* Public webhook URLs: explicit, or derived from the Ingress host. */}}
{{- define "ai-bot.telegramWebhookUrl" -}}
{{- if .Values.config.telegram.webhook.url }}
{{- .Values.config.telegram.webhook.url }}
{{- else if .Values.ingress.host }}
{{- printf "https://%s%s" .Values.ingress.host .Values.config.telegram.webhook.path }}
{{- end }}
{{- end }}

{{- define "ai-bot.feishuWebhookUrl" -}}
{{- if .Values.ingress.host }}
{{- printf "https://%s%s" .Values.ingress.host .Values.config.feishu.event_path }}
{{- end }}
{{- end }}

{{/* A copy of a map without empty strings and nulls, nested maps included (so unset values fall back to the services' defaults). */}}
{{- define "ai-bot.compact" -}}
{{- $out := dict -}}
{{- range $k, $x := . -}}
{{- if kindIs "map" $x -}}
{{- $_ := set $out $k (include "ai-bot.compact" $x | fromYaml) -}}
{{- else if not (or (kindIs "invalid" $x) (and (kindIs "string" $x) (eq $x ""))) -}}
{{- $_ := set $out $k $x -}}
{{- end -}}
{{- end -}}
{{- toYaml $out }}
{{- end }}

{{/*
The config file (AIBOT_CONFIG) every service reads. Secrets are not in it: the llm models' api_key
is a ${VAR} reference the services expand from their environment (the Secret), and the Telegram,
Feishu and Kafka secrets are environment variables that override the file.
*/}}
{{- define "ai-bot.config" -}}
{{- $v := .Values -}}
{{- $models := list -}}
{{- range $m := $v.config.models -}}
{{- $out := omit $m "apiKeyEnv" | include "ai-bot.compact" | fromYaml -}}
{{- if eq $m.type "llm" -}}
{{- $env := "AIBOT_LLM_API_KEY" -}}
{{- if hasKey $m "apiKeyEnv" }}{{ $env = $m.apiKeyEnv }}{{ end -}}
{{- if $env }}{{ $_ := set $out "api_key" (printf "${%s}" $env) }}{{ end -}}
{{- else -}}
{{- $_ := set $out "device" (ternary "cuda" "cpu" (and $v.asrWorker.enabled $v.asrWorker.gpu.enabled)) -}}
{{- end -}}
{{- $models = append $models $out -}}
{{- end -}}
{{- $telegram := include "ai-bot.compact" $v.config.telegram | fromYaml -}}
{{- $webhookUrl := include "ai-bot.telegramWebhookUrl" . -}}
{{- if and (eq $v.config.telegram.mode "webhook") $webhookUrl -}}
{{- $_ := set $telegram.webhook "url" $webhookUrl -}}
{{- end -}}
{{- $kafka := dict
  "bootstrap_servers" (include "ai-bot.kafkaBootstrap" .)
  "security_protocol" $v.kafka.securityProtocol
  "sasl_mechanism" $v.kafka.saslMechanism
  "sasl_username" $v.kafka.saslUsername
  "partitions" $v.kafka.partitions
  "replication_factor" $v.kafka.replicationFactor
  "create_topics" $v.kafka.createTopics -}}
{{- if $v.kafka.caSecret.name -}}
{{- $_ := set $kafka "ssl_cafile" (printf "/etc/ai-bot-kafka-ca/%s" $v.kafka.caSecret.key) -}}
{{- end -}}
{{- $config := dict
  "models" $models
  "telegram" $telegram
  "feishu" (include "ai-bot.compact" $v.config.feishu | fromYaml)
  "kafka" (include "ai-bot.compact" $kafka | fromYaml)
  "core" (include "ai-bot.compact" $v.config.core | fromYaml)
  "renderer" (include "ai-bot.compact" $v.config.renderer | fromYaml)
  "asr" (include "ai-bot.compact" $v.config.asr | fromYaml)
  "observability" (include "ai-bot.compact" $v.config.observability | fromYaml)
  "security" (include "ai-bot.compact" $v.config.security | fromYaml)
  "storage" (include "ai-bot.storageConfig" . | fromYaml)
  "alerting" (include "ai-bot.alertingConfig" . | fromYaml)
  "archive" (dict "volume_max_records" $v.archiver.volumeMaxRecords "volume_max_seconds" $v.archiver.volumeMaxSeconds) -}}
{{- if $v.config.access }}{{ $_ := set $config "access" $v.config.access }}{{ end -}}
{{- toYaml $config }}
{{- end }}

{{/*
Checks that fail the install with a message saying what to set, instead of pods that crash.
With existingSecret the chart cannot see the secret values, so only the non-secret ones are checked.
*/}}
{{- define "ai-bot.validate" -}}
{{- $v := .Values -}}
{{- $own := not $v.existingSecret -}}
{{- if and $v.kafka.internal.enabled $v.kafka.bootstrapServers -}}
{{- fail "kafka: set either kafka.bootstrapServers (an external cluster) or kafka.internal.enabled, not both" -}}
{{- end -}}
{{- if not (include "ai-bot.kafkaBootstrap" .) -}}
{{- fail "kafka: set kafka.bootstrapServers to your Kafka cluster, or kafka.internal.enabled=true to try the chart out" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" $v.kafka.securityProtocol) (not $v.kafka.saslMechanism) -}}
{{- fail "kafka: a SASL security protocol needs kafka.saslMechanism and kafka.saslUsername" -}}
{{- end -}}
{{- if and $own (hasPrefix "SASL_" $v.kafka.securityProtocol) (not $v.secrets.kafkaSaslPassword) -}}
{{- fail "kafka: set secrets.kafkaSaslPassword (or existingSecret with AIBOT_KAFKA__SASL_PASSWORD)" -}}
{{- end -}}
{{- if and $v.config.telegram.enabled $own (not $v.secrets.telegramBotToken) -}}
{{- fail "telegram: set secrets.telegramBotToken (or existingSecret with AIBOT_TELEGRAM__BOT_TOKEN), or telegram.enabled=false" -}}
{{- end -}}
{{- if and $v.config.telegram.enabled (eq $v.config.telegram.mode "webhook") (not (include "ai-bot.telegramWebhookUrl" .)) -}}
{{- fail "telegram: webhook mode needs a public URL: set ingress.host (or telegram.webhook.url), or telegram.mode=polling" -}}
{{- end -}}
{{- if and $v.config.feishu.enabled (not $v.config.feishu.app_id) -}}
{{- fail "feishu: set feishu.app_id" -}}
{{- end -}}
{{- if and $v.config.feishu.enabled $own (not (and $v.secrets.feishuAppSecret $v.secrets.feishuVerificationToken)) -}}
{{- fail "feishu: set secrets.feishuAppSecret and secrets.feishuVerificationToken (or existingSecret)" -}}
{{- end -}}
{{- $llm := 0 -}}
{{- range $m := $v.config.models -}}
{{- if eq $m.type "llm" -}}
{{- $llm = add1 $llm -}}
{{- if and $own (not (hasKey $m "apiKeyEnv")) (not $v.secrets.llmApiKey) -}}
{{- fail (printf "models: %s needs an API key: set secrets.llmApiKey (or existingSecret with AIBOT_LLM_API_KEY), or apiKeyEnv: \"\" for an endpoint without one" $m.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $llm 0 -}}
{{- fail "models: add at least one model of type llm (core-llm needs one)" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.ingress.host) -}}
{{- fail "ingress: set ingress.host to the public host name of the webhooks (or ingress.enabled=false)" -}}
{{- end -}}
{{- if and $v.ingress.enabled (eq (toString $v.ingress.tls.minVersion) "1.3") -}}
{{- fail "ingress: ingress-nginx takes TLS versions only from its controller ConfigMap: set ssl-protocols: \"TLSv1.3\" there and leave ingress.tls.minVersion at 1.2, or use gateway.enabled" -}}
{{- end -}}
{{- if and $v.gateway.enabled (not $v.ingress.host) -}}
{{- fail "gateway: set ingress.host to the public host name of the webhooks (the HTTPRoute's hostname)" -}}
{{- end -}}
{{- if and $v.gateway.enabled (not $v.gateway.existingGateway) (not $v.gateway.className) -}}
{{- fail "gateway: set gateway.className (your controller's GatewayClass) or gateway.existingGateway" -}}
{{- end -}}
{{- end }}

{{/* The claim of the local storage backend: the operator's, or the one storage.yaml creates. */}}
{{- define "ai-bot.storageClaim" -}}
{{- .Values.storage.existingClaim | default (printf "%s-storage" (include "ai-bot.fullname" .)) -}}
{{- end }}

{{/* The config file's `storage:` section (snake_case); credentials come from storage.credentialsSecret. */}}
{{- define "ai-bot.storageConfig" -}}
{{- $s := .Values.storage -}}
{{- $out := dict "backend" $s.backend "retention_days" $s.retentionDays -}}
{{- if eq $s.backend "local" -}}
{{- $_ := set $out "path" $s.path -}}
{{- else -}}
{{- if not $s.bucket }}{{ fail "storage: the s3 backend needs storage.bucket" }}{{ end -}}
{{- $_ := set $out "bucket" $s.bucket -}}
{{- $_ := set $out "virtual_hosted_style" $s.virtualHostedStyle -}}
{{- with $s.prefix }}{{ $_ := set $out "prefix" . }}{{ end -}}
{{- with $s.endpoint }}{{ $_ := set $out "endpoint" . }}{{ end -}}
{{- with $s.region }}{{ $_ := set $out "region" . }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end }}

{{/* The secrets of alert delivery: the release's Secret (for Kafka-free settings it is harmless) and alerting.existingSecret. */}}
{{- define "ai-bot.alertingEnvFrom" -}}
envFrom:
  - secretRef:
      name: {{ include "ai-bot.secretName" . }}
  {{- with .Values.alerting.existingSecret }}
  # AIBOT_ALERTING__SMTP_PASSWORD, __TELEGRAM_BOT_TOKEN, __FEISHU_WEBHOOK_URL, __FEISHU_SECRET, __SMS_TOKEN.
  - secretRef:
      name: {{ . }}
  {{- end }}
{{- end }}

{{/* The config file's `alerting:` section: the channels without their secrets, and where the relay is. */}}
{{- define "ai-bot.alertingConfig" -}}
{{- $out := include "ai-bot.compact" .Values.alerting.config | fromYaml -}}
{{- $_ := set $out "relay_url" (printf "http://%s:9095" (include "ai-bot.componentFullname" (dict "root" . "component" "alert-relay"))) -}}
{{- toYaml $out -}}
{{- end }}

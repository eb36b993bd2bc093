#!/usr/bin/env bash
# Runs the real Pulumi CLI on one stack with the project's offline defaults
# (scripts/pulumi-env.sh: local file backend, passphrase secrets, no downloads).
#   scripts/pulumi.sh up prod        render (no kubeconfig) or deploy (kubeconfig)
#   scripts/pulumi.sh preview preprod
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/pulumi.sh up|preview|refresh|destroy|stack prod|preprod [pulumi flags...]"
command=${1:?$usage}
stack=${2:?$usage}
shift 2
case "$stack" in
  prod | preprod) ;;
  *) echo "pulumi.sh: unknown stack '$stack' (allowed: prod, preprod)" >&2; exit 2 ;;
esac

# shellcheck source=scripts/pulumi-env.sh
source scripts/pulumi-env.sh
pulumi stack select --create --secrets-provider passphrase "$stack" >/dev/null

case "$command" in
  up) exec pulumi up --yes --stack "$stack" "$@" ;;
  preview) exec pulumi preview --stack "$stack" "$@" ;;
  refresh) exec pulumi refresh --yes --stack "$stack" "$@" ;;
  destroy) exec pulumi destroy --stack "$stack" "$@" ;;
  stack) exec pulumi stack --stack "$stack" "$@" ;;
  *) echo "pulumi.sh: unknown command '$command'. $usage" >&2; exit 2 ;;
esac

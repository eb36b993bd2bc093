#!/usr/bin/env bash
# Runs the real Pulumi CLI on one stack with the project's offline defaults
# (scripts/pulumi-env.sh: local file backend, passphrase secrets, no downloads).
#   scripts/pulumi.sh up prod        render (no kubeconfig) or deploy (kubeconfig)
#   scripts/pulumi.sh preview preprod
# The committed stack file is never written: the CLI works on a copy (onboarding_stack_config).
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
cfg=$(onboarding_stack_config "$stack")
run() { pulumi "$@" --stack "$stack" --config-file "$cfg"; }

case "$command" in
  up) run up --yes "$@" ;;
  preview) run preview "$@" ;;
  refresh) run refresh --yes "$@" ;;
  destroy) run destroy "$@" ;;
  stack) pulumi stack --stack "$stack" "$@" ;;
  *) echo "pulumi.sh: unknown command '$command'. $usage" >&2; exit 2 ;;
esac

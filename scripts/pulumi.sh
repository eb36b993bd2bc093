#!/usr/bin/env bash
# Runs the real Pulumi CLI on one stack with the project's offline defaults
# (scripts/pulumi-env.sh: local file backend unless PULUMI_BACKEND_URL says otherwise,
# passphrase secrets, no downloads).
#   scripts/pulumi.sh up prod        render (no kubeconfig) or deploy (kubeconfig)
#   scripts/pulumi.sh preview preprod
# The committed stack file is never written: the CLI works on a copy (onboarding_stack_config).
#
# Render mode (ONBOARDING_RENDER=1, or no kubeconfig) writes manifests only: `up` applies at once.
# Deploy mode (a kubeconfig) is guarded; each of these stops the script with what to set:
#   - secrets: PULUMI_CONFIG_PASSPHRASE_FILE or PULUMI_CONFIG_PASSPHRASE (not the public
#     development one), or a KMS secrets provider (docs/state-backend.md);
#   - the cluster: the stack config's onboarding:kubeContext must be a context of the
#     kubeconfig (the program then deploys to that context, whatever the current-context);
#   - confirmation: `up` and `refresh` show the preview and ask (pulumi's own prompt). Without
#     a terminal (CI) they need an explicit CONFIRM=1 or --yes, else they fail.
#   CONFIRM=1 scripts/pulumi.sh up preprod       # CI, after a reviewed preview
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
case "$command" in
  up | preview | refresh | destroy | stack) ;;
  *) echo "pulumi.sh: unknown command '$command'. $usage" >&2; exit 2 ;;
esac

die() { printf 'pulumi.sh: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/pulumi-env.sh
source scripts/pulumi-env.sh
run() { pulumi "$@" --stack "$stack" --config-file "$cfg"; }

python=.venv/bin/python
[ -x "$python" ] || python=python3

# The value of onboarding:kubeContext for this run: a --config/-c flag on the command line,
# else the stack config.
kube_context() {
  local arg next=false value=""
  for arg in "$@"; do
    if $next; then
      case "$arg" in onboarding:kubeContext=*) value=${arg#onboarding:kubeContext=} ;; esac
      next=false
      continue
    fi
    case "$arg" in
      --config | -c) next=true ;;
      --config=onboarding:kubeContext=*) value=${arg#--config=onboarding:kubeContext=} ;;
    esac
  done
  if [ -z "$value" ]; then
    value=$("$python" -c 'import sys, yaml
print((yaml.safe_load(open(sys.argv[1])) or {}).get("config", {}).get("onboarding:kubeContext") or "")' "Pulumi.$stack.yaml")
  fi
  printf '%s\n' "$value"
}

kubeconfig_has_context() {
  "$python" -c 'import sys, yaml
doc = yaml.safe_load(open(sys.argv[1])) or {}
sys.exit(0 if sys.argv[2] in [c.get("name") for c in doc.get("contexts") or []] else 1)' "$1" "$2"
}

has() { local want=$1 arg; shift; for arg in "$@"; do [ "$arg" = "$want" ] && return 0; done; return 1; }

check_deploy() {
  local kubeconfig context provider state_cfg
  kubeconfig=$(onboarding_kubeconfig)
  # The secrets provider of the stack as created (onboarding_stack_config keeps its line in
  # the state's copy of the stack file), else the one a new stack gets.
  case "$PULUMI_BACKEND_URL" in
    file://*) state_cfg="${PULUMI_BACKEND_URL#file://}/config/Pulumi.$stack.yaml" ;;
    *) state_cfg=".pulumi-state/config/Pulumi.$stack.yaml" ;;
  esac
  provider=$(sed -n 's/^secretsprovider: *//p' "$state_cfg" 2>/dev/null || true)
  case "${provider:-${ONBOARDING_SECRETS_PROVIDER:-passphrase}}" in
    passphrase)
      if [ -z "${PULUMI_CONFIG_PASSPHRASE+x}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
        die "refusing to deploy $stack (kubeconfig $kubeconfig): no passphrase for the state's secrets.
  Set PULUMI_CONFIG_PASSPHRASE_FILE (or PULUMI_CONFIG_PASSPHRASE) from the team's secret store,
  or create the stack with a KMS secrets provider (ONBOARDING_SECRETS_PROVIDER): docs/state-backend.md.
  To render manifests instead: ONBOARDING_RENDER=1 scripts/pulumi.sh $command $stack"
      fi
      local passphrase=${PULUMI_CONFIG_PASSPHRASE:-}
      [ -n "$passphrase" ] || [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] ||
        passphrase=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$PULUMI_CONFIG_PASSPHRASE_FILE")
      [ "$passphrase" != "$ONBOARDING_PUBLIC_PASSPHRASE" ] ||
        die "refusing to deploy $stack: PULUMI_CONFIG_PASSPHRASE is the public development passphrase (it is in this repository).
  Use the team's passphrase (PULUMI_CONFIG_PASSPHRASE_FILE) or a KMS secrets provider: docs/state-backend.md"
      ;;
  esac
  context=$(kube_context "$@")
  [ -n "$context" ] ||
    die "refusing to deploy $stack: Pulumi.$stack.yaml names no onboarding:kubeContext (the kubeconfig context of $stack's cluster)"
  kubeconfig_has_context "$kubeconfig" "$context" ||
    die "refusing to deploy $stack: the kubeconfig $kubeconfig has no context '$context' (onboarding:kubeContext of Pulumi.$stack.yaml).
  Point KUBECONFIG at $stack's cluster, or render instead: ONBOARDING_RENDER=1 scripts/pulumi.sh $command $stack"
  printf 'pulumi.sh: DEPLOY mode: stack %s, context %s of %s, backend %s\n' \
    "$stack" "$context" "$kubeconfig" "$PULUMI_BACKEND_URL" >&2
}

# Flags that apply changes: in render mode, --yes; in deploy mode, only on explicit confirmation,
# else pulumi's own prompt (it shows the preview first), else (no terminal) a clear failure.
apply_flags=()
if onboarding_render_mode; then
  case "$command" in up | refresh) apply_flags=(--yes) ;; esac
else
  case "$command" in
    up | preview | refresh | destroy) check_deploy "$@" ;;
  esac
  case "$command" in
    up | refresh)
      if [ "${CONFIRM:-}" = 1 ]; then
        apply_flags=(--yes)
      elif has --yes "$@" || has -y "$@"; then
        :
      elif [ -t 0 ] && [ -t 1 ]; then
        echo "pulumi.sh: the preview comes first; pulumi asks before applying anything" >&2
      else
        die "refusing to $command $stack without confirmation: no terminal to ask on.
  Review the preview (scripts/pulumi.sh preview $stack), then run with CONFIRM=1 (or --yes)."
      fi
      ;;
  esac
fi

cfg=$(onboarding_stack_config "$stack")
case "$command" in
  # The policy pack (policies/README.md) checks every preview and update: a violation stops it.
  up) run up "${apply_flags[@]}" --policy-pack policies "$@" ;;
  preview) run preview --policy-pack policies "$@" ;;
  refresh) run refresh "${apply_flags[@]}" "$@" ;;
  destroy) run destroy "$@" ;;
  stack) pulumi stack --stack "$stack" "$@" ;;
esac

# Offline defaults for running the real Pulumi CLI on this project. Source it, don't run it:
# shellcheck shell=bash
#   source scripts/pulumi-env.sh
# It does not build anything; scripts/bootstrap-toolchain.sh does (make toolchain).
#
# - PATH: the toolchain's bin dir first (pulumi, the Python language host and the kubernetes
#   and random providers). The CLI finds the language host next to itself and the providers on
#   PATH ("ambient" plugins), so nothing is installed into PULUMI_HOME and nothing is downloaded.
# - PULUMI_HOME: a folder inside the toolchain cache, so a developer's ~/.pulumi (and any
#   plugins downloaded there on another machine) is never mixed in.
# - PULUMI_BACKEND_URL: the project's local state folder, .pulumi-state/ (gitignored).
# - PULUMI_CONFIG_PASSPHRASE: see below.
# Any of these already set in the environment is kept, except PATH (prepended) and
# PULUMI_IGNORE_AMBIENT_PLUGINS (unset: with it the CLI would ignore the providers on PATH and
# try to download them).

_onb_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_onb_pulumi_version=$(sed -n 's/^PULUMI_VERSION=//p' "$_onb_root/scripts/bootstrap-toolchain.sh")
_onb_prefix="${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/pulumi-${_onb_pulumi_version}"
export ONBOARDING_TOOLCHAIN_BIN="$_onb_prefix/bin"

if [ ! -x "$ONBOARDING_TOOLCHAIN_BIN/pulumi" ]; then
	echo "pulumi-env.sh: no toolchain in $ONBOARDING_TOOLCHAIN_BIN yet; run scripts/bootstrap-toolchain.sh (make toolchain)" >&2
fi
case ":$PATH:" in
*":$ONBOARDING_TOOLCHAIN_BIN:"*) ;;
*) export PATH="$ONBOARDING_TOOLCHAIN_BIN:$PATH" ;;
esac

export PULUMI_HOME="${PULUMI_HOME:-$_onb_prefix/home}"
mkdir -p "$PULUMI_HOME"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
unset PULUMI_IGNORE_AMBIENT_PLUGINS

export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$_onb_root/.pulumi-state}"
case "$PULUMI_BACKEND_URL" in
file://*) mkdir -p "${PULUMI_BACKEND_URL#file://}" ;;
esac

# Render mode or deploy mode, decided as the program decides it (infra/config.py, render_mode):
# render mode when ONBOARDING_RENDER=1 or when there is no kubeconfig (the first existing file
# of KUBECONFIG, else ~/.kube/config). Returns 0 in render mode.
onboarding_render_mode() {
	[ "${ONBOARDING_RENDER:-}" = 1 ] && return 0
	[ -n "$(onboarding_kubeconfig)" ] && return 1
	return 0
}
onboarding_kubeconfig() {
	local IFS=: candidate
	for candidate in ${KUBECONFIG:-} "$HOME/.kube/config"; do
		[ -n "$candidate" ] && [ -f "$candidate" ] && { printf '%s\n' "$candidate"; return 0; }
	done
	return 0
}

# Secrets in the state are encrypted with a passphrase (or a KMS key: docs/state-backend.md).
# In RENDER MODE ONLY, with the local file backend (a developer's machine, CI's throwaway state
# of rendered manifests), a fixed, public development passphrase is the default, so `make up`
# renders offline with no set-up. It protects nothing: anyone with this repository knows it.
# Outside render mode there is no default: a deploy needs PULUMI_CONFIG_PASSPHRASE_FILE (or
# PULUMI_CONFIG_PASSPHRASE) from the team's secret store, or a KMS secrets provider;
# scripts/pulumi.sh refuses a deploy without one, and the program refuses the public one.
ONBOARDING_PUBLIC_PASSPHRASE="onboarding-local-dev-only-not-a-secret"
if [ -z "${PULUMI_CONFIG_PASSPHRASE+x}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
	if ! onboarding_render_mode; then
		echo "pulumi-env.sh: deploy mode (a kubeconfig is present) and no PULUMI_CONFIG_PASSPHRASE(_FILE): not defaulting it (docs/state-backend.md; ONBOARDING_RENDER=1 to render)" >&2
	else
		case "$PULUMI_BACKEND_URL" in
		file://*) export PULUMI_CONFIG_PASSPHRASE="$ONBOARDING_PUBLIC_PASSPHRASE" ;;
		*) echo "pulumi-env.sh: PULUMI_CONFIG_PASSPHRASE is not set and the backend is not local; not defaulting it" >&2 ;;
		esac
	fi
fi

# The committed Pulumi.<stack>.yaml files are never written to. The CLI writes the secrets
# provider's lines into the stack file it uses (`encryptionsalt:` with a passphrase;
# `secretsprovider:` and `encryptedkey:` with a KMS key); so commands run with --config-file on
# a copy kept in the state folder: the repo file's content plus those lines as the CLI wrote
# them last time. A new stack is created from a scratch copy of the project files, with the
# secrets provider ONBOARDING_SECRETS_PROVIDER (default: passphrase; e.g.
# awskms://alias/onboarding?region=eu-west-3, hashivault://onboarding: docs/state-backend.md).
#   cfg=$(onboarding_stack_config prod) && pulumi preview --stack prod --config-file "$cfg"
onboarding_stack_config() {
	local stack=$1 root state_dir cfg salt scratch keep='^(encryptionsalt|secretsprovider|encryptedkey):'
	root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
	case "$PULUMI_BACKEND_URL" in
	file://*) state_dir="${PULUMI_BACKEND_URL#file://}" ;;
	*) state_dir="$root/.pulumi-state" ;;
	esac
	cfg="$state_dir/config/Pulumi.$stack.yaml"
	mkdir -p "$state_dir/config"
	salt=$(grep -E "$keep" "$cfg" 2>/dev/null || true)
	{ grep -vE "$keep" "$root/Pulumi.$stack.yaml"; [ -z "$salt" ] || printf '%s\n' "$salt"; } >"$cfg.tmp"
	mv -f "$cfg.tmp" "$cfg"
	if ! pulumi stack ls --json --non-interactive --cwd "$root" | grep -q "\"name\": \"$stack\""; then
		scratch="$state_dir/scratch"
		rm -rf "$scratch" && mkdir -p "$scratch"
		cp "$root/Pulumi.yaml" "$cfg" "$scratch/"
		(cd "$scratch" && pulumi stack init "$stack" --secrets-provider "${ONBOARDING_SECRETS_PROVIDER:-passphrase}" --no-select --non-interactive >/dev/null)
		grep -E "$keep" "$scratch/Pulumi.$stack.yaml" >>"$cfg" || true
		rm -rf "$scratch"
		printf 'created stack %s in %s\n' "$stack" "$PULUMI_BACKEND_URL" >&2
	fi
	printf '%s\n' "$cfg"
}

unset _onb_root _onb_pulumi_version _onb_prefix

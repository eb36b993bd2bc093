#!/usr/bin/env bash
# Runs the real Pulumi CLI on the real program for each stack in render mode (no cluster), and
# validates what it renders:
#   1. the stack is created in the local file backend (.pulumi-state/) if it does not exist
#   2. pulumi preview --policy-pack policies   (timed; the pack's rules: policies/README.md)
#   3. pulumi up --yes                 (writes rendered/<stack>/; timed)
#   4. every manifest validated: built-in kinds by kubernetes-validate --strict against the
#      stack's onboarding:kubernetesVersion, custom resources (PodMonitor, Probe,
#      PrometheusRule, Gateway, HTTPRoute, ...) by explicit checks, promtool and their CRDs'
#      schemas (copied from Go module zips by scripts/bootstrap-kube.sh crds)
#      (tests/integration/manifest_check.py)
#   5. pulumi preview --expect-no-changes   (a second run of an unchanged program changes nothing)
#
#   scripts/render-and-validate.sh              # prod and preprod
#   scripts/render-and-validate.sh preprod
# Needs: .venv (make setup) and the toolchain (built here if missing: scripts/bootstrap-toolchain.sh).
#
# The committed Pulumi.<stack>.yaml files are never written to. With the passphrase secrets
# provider the CLI adds an `encryptionsalt:` line to the stack file it uses; so every command
# here runs with --config-file on a copy kept in .pulumi-state/config/ (the repo file's content
# plus the salt line the CLI wrote last time), and a new stack is created from a scratch copy
# of the project files in .pulumi-state/scratch/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() { printf 'render-and-validate: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf '[render-and-validate %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stacks=("$@")
[ ${#stacks[@]} -gt 0 ] || stacks=(prod preprod)
for s in "${stacks[@]}"; do
	[ -f "Pulumi.$s.yaml" ] || die "no Pulumi.$s.yaml (stacks: prod, preprod)"
done
[ -x .venv/bin/python ] || die ".venv is missing: run scripts/setup.sh (make setup) first"
.venv/bin/python -c 'import kubernetes_validate' 2>/dev/null ||
	die "kubernetes-validate is not installed in .venv (it is a dev dependency: make setup)"
.venv/bin/python -c 'import pulumi_policy' 2>/dev/null ||
	die "pulumi-policy (the policy pack's SDK) is not installed in .venv (a dev dependency: make setup)"

scripts/bootstrap-toolchain.sh >/dev/null
# Render mode even on a machine that has a kubeconfig: this script never touches a cluster.
# Set before pulumi-env.sh, which gives the local state its default passphrase in render mode only.
export ONBOARDING_RENDER=1
# shellcheck source=scripts/pulumi-env.sh
source scripts/pulumi-env.sh

summary=()
for stack in "${stacks[@]}"; do
	say "== $stack"
	cfg=$(onboarding_stack_config "$stack")
	run() { pulumi "$@" --stack "$stack" --config-file "$cfg" --non-interactive; }
	out="rendered/$stack"
	# Render mode only writes a file when a resource changes: a state that has resources but
	# no rendered/ folder (deleted by hand) would leave nothing to validate.
	if [ ! -d "$out" ] && pulumi stack export --stack "$stack" 2>/dev/null | grep -q '"type": "kubernetes:'; then
		die "$out is missing but stack $stack already has rendered resources in $PULUMI_BACKEND_URL;
  render mode only rewrites changed files. Start the local stack afresh (it only renders files):
    source scripts/pulumi-env.sh && pulumi stack rm --force --yes --stack $stack
  then re-run this script (the generated secrets will be new)."
	fi

	start=$SECONDS
	# With the policy pack (policies/): a violated rule fails the preview, named in its log.
	run preview --policy-pack policies >"/tmp/preview-$stack.$$.log" 2>&1 ||
		{ cat "/tmp/preview-$stack.$$.log" >&2; die "pulumi preview of $stack failed (or broke a policy, above)"; }
	preview_s=$((SECONDS - start))
	sed -n '/^Policies:/,/^$/p' "/tmp/preview-$stack.$$.log" >&2
	tail -n 12 "/tmp/preview-$stack.$$.log" >&2
	say "$stack: preview took ${preview_s}s"

	start=$SECONDS
	run up --yes --skip-preview >"/tmp/up-$stack.$$.log" 2>&1 ||
		{ cat "/tmp/up-$stack.$$.log" >&2; die "pulumi up of $stack failed"; }
	up_s=$((SECONDS - start))
	tail -n 6 "/tmp/up-$stack.$$.log" >&2
	say "$stack: up took ${up_s}s"
	[ -d "$out" ] || die "pulumi up of $stack rendered nothing into $out"

	version=$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["config"]["onboarding:kubernetesVersion"])' "Pulumi.$stack.yaml") ||
		die "Pulumi.$stack.yaml has no onboarding:kubernetesVersion"
	# --bootstrap-crds: custom resources also against their CRDs' schemas (scripts/bootstrap-kube.sh crds)
	.venv/bin/python tests/integration/manifest_check.py "$out" --kubernetes-version "$version" --bootstrap-crds ||
		die "manifests of $stack do not validate (above)"

	start=$SECONDS
	run preview --expect-no-changes >"/tmp/preview2-$stack.$$.log" 2>&1 ||
		{ cat "/tmp/preview2-$stack.$$.log" >&2; die "a second preview of $stack expected no changes but found some (above)"; }
	again_s=$((SECONDS - start))
	say "$stack: second preview reports no changes (${again_s}s)"
	rm -f "/tmp/preview-$stack.$$.log" "/tmp/up-$stack.$$.log" "/tmp/preview2-$stack.$$.log"
	summary+=("$stack: preview ${preview_s}s, up ${up_s}s, no-change preview ${again_s}s, $(find "$out" -name '*.yaml' | wc -l) files in $out")
done

say "done"
printf '%s\n' "${summary[@]}"

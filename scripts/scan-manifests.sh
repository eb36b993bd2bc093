#!/usr/bin/env bash
# Scans the rendered manifests with checkov (kubernetes and secrets frameworks) and judges the
# findings against security/checkov-skips.txt, the one file of justified skips:
#   scripts/scan-manifests.sh              # rendered/prod and rendered/preprod
#   scripts/scan-manifests.sh preprod
# Needs the manifests from scripts/render-and-validate.sh. Exit 0 only with no failed check
# that a skip does not excuse, and no skip that excuses nothing (scripts/checkov_gate.py).
#
# checkov and its many dependencies live in a virtualenv of their own, cached outside the
# repository by version (like the Pulumi toolchain), so they never meet the project's pins.
# It runs with --skip-download and BC_SKIP_MAPPING: nothing is fetched from Prisma Cloud.
#
# Secrets: the secrets framework scans every rendered manifest and both stack files, so what
# its detectors recognize (known key formats; a high-entropy value under a key named like
# password, secret, token or key) fails the scan in a ConfigMap, an env value, an annotation
# or a stack file. It is a net, not a proof: a random string under a neutral name passes it
# (the policy pack and the settings, which refuse secrets in stack config, are the other
# nets). The rendered Secret objects hold the generated passwords and keys in clear (render
# mode writes what a deploy would send to the API server); the skip file excuses exactly those
# files, by name (v1-secret-*), and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
venv=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/checkov-$CHECKOV_VERSION
skips=${CHECKOV_SKIPS:-security/checkov-skips.txt}
# Overrides for the tests: where the stacks' manifests are, and where to keep the reports.
root=${SCAN_ROOT:-rendered}

die() { printf 'scan-manifests: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf '[scan-manifests %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stacks=("$@")
[ ${#stacks[@]} -gt 0 ] || stacks=(prod preprod)
for s in "${stacks[@]}"; do
	[ -d "$root/$s" ] || die "$root/$s is missing: run scripts/render-and-validate.sh $s first"
done
[ -f "$skips" ] || die "no skip file $skips"

if [ ! -x "$venv/bin/checkov" ] || [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
	say "installing checkov $CHECKOV_VERSION into $venv"
	rm -rf "$venv"
	"${PYTHON:-python3.11}" -m venv "$venv"
	"$venv/bin/pip" install --quiet --upgrade pip
	"$venv/bin/pip" install --quiet "checkov==$CHECKOV_VERSION"
fi

if [ -n "${CHECKOV_REPORTS:-}" ]; then
	reports=$CHECKOV_REPORTS
	mkdir -p "$reports"
else
	reports=$(mktemp -d)
	trap 'rm -rf "$reports"' EXIT
fi
checkov() {
	BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --skip-download --soft-fail --output json "$@" 2>"$reports/stderr" ||
		{ cat "$reports/stderr" >&2; die "checkov $* did not run"; }
}
for s in "${stacks[@]}"; do
	say "$s: kubernetes and secrets checks on $root/$s"
	checkov --directory "$root/$s" --framework kubernetes >"$reports/$s-kubernetes.json"
	checkov --directory "$root/$s" --framework secrets >"$reports/$s-secrets.json"
done
checkov --file Pulumi.prod.yaml --file Pulumi.preprod.yaml --framework secrets >"$reports/stack-files-secrets.json"

"$venv/bin/python" scripts/checkov_gate.py "$skips" "$reports"/*.json

// Package random maps the Terraform random provider onto Pulumi's `random` package, with the
// same tokens as pulumi-random (random:index/randomPassword:RandomPassword, ...), so the
// published pulumi-random SDKs work against it.
package random

import (
	"context"
	"errors"

	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/terraform-providers/terraform-provider-random/shim"

	"onboarding.local/toolchain/random/version"
)

const (
	pkgName = "random"
	modName = "index"
)

// Provider returns the bridge description of the provider. metadata is the bridge-metadata.json
// written by the tfgen step (nil while tfgen itself runs).
func Provider(metadata []byte) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:            pftfbridge.ShimProvider(shim.NewProvider()),
		Name:         pkgName,
		Description:  "A Pulumi package to safely use randomness in Pulumi programs.",
		Keywords:     []string{"pulumi", "random"},
		License:      "Apache-2.0",
		Homepage:     "https://pulumi.io",
		Repository:   "https://github.com/pulumi/pulumi-random",
		Version:      version.Version,
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
		Resources: map[string]*tfbridge.ResourceInfo{
			"random_string": {
				// Old RandomString states can lack their schema version; treat them as v1 so
				// the upstream v1->v2->v3 upgrades apply (they are idempotent).
				PreStateUpgradeHook: func(a tfbridge.PreStateUpgradeHookArgs) (int64, resource.PropertyMap, error) {
					if a.PriorStateSchemaVersion == 0 {
						return 1, a.PriorState, nil
					}
					return a.PriorStateSchemaVersion, a.PriorState, nil
				},
			},
			"random_bytes": {ComputeID: randomBytesID},
		},
		Python: func() *tfbridge.PythonInfo {
			p := &tfbridge.PythonInfo{RespectSchemaVersion: true}
			p.PyProject.Enabled = true
			return p
		}(),
		EnableAccurateBridgePreview: true,
		EnableRawStateDelta:         true,
	}
	// random_password -> random:index/randomPassword:RandomPassword, and so on.
	info.MustComputeTokens(tokens.SingleModule("random_", modName,
		func(module, name string) (string, error) {
			return tokens.MakeStandard(pkgName)(module, "Random"+name)
		}))
	info.MustApplyAutoAliases()
	return info
}

// randomBytesID uses the base64 value as the resource ID (ID strings cannot be secret).
func randomBytesID(_ context.Context, state resource.PropertyMap) (resource.ID, error) {
	v, ok := state["base64"]
	if !ok {
		return "", errors.New("random_bytes state has no base64 property")
	}
	if v.IsSecret() {
		v = v.SecretValue().Element
	}
	if !v.IsString() {
		return "", errors.New("random_bytes base64 property is not a string")
	}
	return resource.ID(v.StringValue()), nil
}

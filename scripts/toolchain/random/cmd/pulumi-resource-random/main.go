// Command pulumi-resource-random is the Pulumi random resource provider. The embedded files are
// generated at build time by pulumi-tfgen-random (see scripts/bootstrap-toolchain.sh).
package main

import (
	"context"
	_ "embed"

	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	random "onboarding.local/toolchain/random"
)

//go:embed schema-embed.json
var schema []byte

//go:embed bridge-metadata.json
var bridgeMetadata []byte

func main() {
	pftfbridge.Main(context.Background(), "random", random.Provider(bridgeMetadata),
		pftfbridge.ProviderMetadata{PackageSchema: schema, BridgeMetadata: bridgeMetadata})
}

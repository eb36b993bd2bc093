// Command pulumi-tfgen-random writes the Pulumi schema and bridge metadata of the random
// provider (`pulumi-tfgen-random schema --out DIR`).
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	random "onboarding.local/toolchain/random"
)

func main() { tfgen.Main("random", random.Provider(nil)) }

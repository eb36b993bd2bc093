// Package shim exposes terraform-provider-random's plugin-framework provider, which lives in an
// internal package, to the Pulumi bridge.
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	tfrandom "github.com/terraform-providers/terraform-provider-random/internal/provider"
)

// NewProvider returns a new instance of the Terraform random provider.
func NewProvider() provider.Provider { return tfrandom.New() }

//go:build tools

// Package tools only records the CLI's main package as a dependency so that
// `go mod tidy` keeps everything it needs in go.sum.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"

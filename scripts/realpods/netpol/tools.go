//go:build tools

// Package tools only records kube-router's main package as a dependency so that `go mod tidy`
// keeps everything it needs in go.sum.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"

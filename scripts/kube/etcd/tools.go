//go:build tools

// Package tools only records etcd's main package as a dependency so that `go mod tidy` keeps
// everything it needs in go.sum.
package tools

import _ "go.etcd.io/etcd/server/v3"

//go:build tools

// Wrapper module that builds kubelet and kube-proxy from the Go module proxy for
// scripts/bootstrap-nodes.sh: the same replace block as ../go.mod (every k8s.io/* staging module
// replaced by its published v0.34.2 release), tidied for these two commands. A module of its own
// so that the control plane's recipe (../go.mod, ../go.sum, ../tools.go), which
// scripts/bootstrap-kube.sh's stamps hash, stays as it is.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)

// Package version holds the provider version, set with -ldflags -X at build time.
package version

// Version is the version the provider reports (the pulumi-random release it reproduces).
var Version string

// Package deploycheck holds the tests that keep the Kubernetes manifests
// under deploy/k8s, skaffold.yaml and the Grafana dashboard honest: every
// overlay renders with kustomize (in process, krusty) and decodes strictly
// into the Kubernetes API types; probes, ports and environment variables
// match what each service really serves and reads (its Config type, via
// pkg/config.Describe); every image is a skaffold artifact; the KEDA
// ScaledObject names the contract's stream and consumer; and every
// dashboard query and alert names a metric the services export.
//
// The package has no code of its own; run it with
//
//	go test ./deploycheck/
package deploycheck

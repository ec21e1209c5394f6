module github.com/mailwave/mailwave/tools

go 1.26.0

require (
	github.com/mailwave/mailwave/pkg v0.0.0
	github.com/mailwave/mailwave/proto v0.0.0
	github.com/mailwave/mailwave/services/fbl-parser v0.0.0
	github.com/mailwave/mailwave/services/inbound-dsn v0.0.0
	github.com/mailwave/mailwave/services/planner v0.0.0
	github.com/mailwave/mailwave/services/reputation-monitor v0.0.0
	github.com/mailwave/mailwave/services/sender v0.0.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/emersion/go-msgauth v0.7.0
	github.com/redis/go-redis/v9 v9.23.0
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

require (
	github.com/blang/semver/v4 v4.0.0 // indirect
	github.com/prometheus/prometheus v0.315.1 // indirect
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6
	github.com/emersion/go-smtp v0.25.1
	k8s.io/api v0.37.2 // indirect
	k8s.io/apimachinery v0.37.2 // indirect
	sigs.k8s.io/kustomize/api v0.21.2 // indirect
	sigs.k8s.io/kustomize/kyaml v0.21.2 // indirect
)

replace (
	github.com/mailwave/mailwave/pkg => ../pkg
	github.com/mailwave/mailwave/proto => ../proto
	github.com/mailwave/mailwave/services/fbl-parser => ../services/fbl-parser
	github.com/mailwave/mailwave/services/inbound-dsn => ../services/inbound-dsn
	github.com/mailwave/mailwave/services/planner => ../services/planner
	github.com/mailwave/mailwave/services/reputation-monitor => ../services/reputation-monitor
	github.com/mailwave/mailwave/services/sender => ../services/sender
)

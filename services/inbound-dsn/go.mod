module github.com/mailwave/mailwave/services/inbound-dsn

go 1.26.0

require (
	github.com/mailwave/mailwave/pkg v0.0.0
	github.com/mailwave/mailwave/proto v0.0.0
)

replace (
	github.com/mailwave/mailwave/pkg => ../../pkg
	github.com/mailwave/mailwave/proto => ../../proto
)

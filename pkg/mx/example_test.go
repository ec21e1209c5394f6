package mx_test

import (
	"context"
	"fmt"

	"github.com/mailwave/mailwave/pkg/mx"
)

// Route gives the budget keys (provider, site) and the hosts to try.
func ExampleResolver_Route() {
	r, err := mx.NewResolver("") // the nameservers of /etc/resolv.conf
	if err != nil {
		fmt.Println(err)
		return
	}
	route, err := r.Route(context.Background(), "example.com")
	switch {
	case mx.IsPermanent(err):
		fmt.Println("bounce:", err) // mx.ErrNullMX, mx.ErrNoSuchDomain, …
		return
	case err != nil:
		fmt.Println("defer:", err)
		return
	}
	fmt.Println(route.Provider, mx.Token(route.Site))
	for _, h := range route.Hosts {
		fmt.Println(h.Name, h.Addrs)
	}
}

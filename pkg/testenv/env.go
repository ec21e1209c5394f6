package testenv

import "os"

// getenv is the one place testenv reads the environment.
func getenv(k string) string { return os.Getenv(k) }

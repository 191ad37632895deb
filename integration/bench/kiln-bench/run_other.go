//go:build !linux

package main

import (
	"context"
	"errors"
	"io"
)

// run needs Linux (network namespaces, veth, /proc).
func run(context.Context, Config, io.Writer) (*Results, error) {
	return NewResults(), errors.New("kiln-bench runs on Linux only")
}

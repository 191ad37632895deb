// Command kiln is the operator CLI of kilnd. It reaches the daemon at
// KILN_SERVER (default http://127.0.0.1:8080) with KILN_TOKEN (default: the
// admin.token of a local kilnd's data dir, KILN_DATA_DIR or /var/lib/kiln).
// Exit codes: 0 success, 1 failure, 2 usage, 3 a waited-for rollout failed.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/immutableinfra/kiln/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

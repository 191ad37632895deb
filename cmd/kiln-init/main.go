// Command kiln-init is PID 1 of kiln's netboot initramfs. Run as PID 1 it
// boots the host as docs/boot-protocol.md describes (see pkg/bootagent).
// Run from the booted image as
//
//	kiln-init report PHASE [MESSAGE]
//
// it reads /run/kiln/boot.json and posts the boot report to kilnd; it exits
// 0 when kilnd recorded it (204) and 1 with one line on stderr otherwise.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/bootagent"
)

// bootJSON is where kiln-init leaves the boot identity for the image.
const bootJSON = "/run/kiln/boot.json"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "report" {
		os.Exit(reportCmd(context.Background(), os.Args[2:], bootJSON, os.Stderr, reportOptions{}))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "usage: kiln-init report PHASE [MESSAGE]   (as PID 1: boot the netboot image)")
		os.Exit(2)
	}
	boot()
}

// reportOptions are the retry knobs of the report subcommand; the zero value
// means 5 attempts, 1 s backoff doubling, 5 s per attempt.
type reportOptions struct {
	attempts int
	backoff  time.Duration
	timeout  time.Duration
}

// reportCmd implements `kiln-init report PHASE [MESSAGE]` and returns the
// exit code. Extra words after PHASE are joined into the message.
func reportCmd(ctx context.Context, args []string, bootJSONPath string, stderr io.Writer, o reportOptions) int {
	if len(args) < 1 || args[0] == "" {
		fmt.Fprintln(stderr, "kiln-init report: usage: kiln-init report PHASE [MESSAGE] (PHASE: network, fetched, verified, mounted, switching, booted or failed)")
		return 2
	}
	info, err := bootagent.ReadBootInfo(bootJSONPath)
	if err != nil {
		fmt.Fprintf(stderr, "kiln-init report: %v\n", err)
		return 1
	}
	if o.attempts == 0 {
		o.attempts = 5
	}
	rp := &bootagent.Reporter{Server: info.Server, Token: info.Token, Attempts: o.attempts, Backoff: o.backoff, Timeout: o.timeout}
	r := bootagent.Report{Phase: args[0], Digest: info.Digest, Message: strings.Join(args[1:], " ")}
	if err := rp.Send(ctx, r); err != nil {
		fmt.Fprintf(stderr, "kiln-init report: %v\n", err)
		if errors.Is(err, bootagent.ErrUnknownPhase) {
			return 2
		}
		return 1
	}
	return 0
}

// boot is PID 1: it never returns (exec of the image's init, reboot, or, if
// even the reboot fails, sleeping forever since PID 1 must not exit).
func boot() {
	ctx := context.Background()
	paths := bootagent.PathsUnder("/")
	sys := &bootagent.LinuxSystem{}
	var console io.Writer = os.Stdout
	if err := sys.MountEarly(paths); err != nil {
		fmt.Fprintf(console, "kiln-init: FAILED: %v\n", err)
		haltAfter(ctx, sys, bootagent.DefaultRebootDelay, console)
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		console = f
		sys.Stdio = f
	}
	logger := slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sys.Logger = logger

	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		fmt.Fprintf(console, "kiln-init: FAILED: %v\n", err)
		haltAfter(ctx, sys, bootagent.DefaultRebootDelay, console)
	}
	cfg, err := bootagent.ParseCmdline(string(raw))
	if err != nil {
		// Without a valid command line there is no server to report to.
		fmt.Fprintf(console, "kiln-init: FAILED: %v\n", err)
		haltAfter(ctx, sys, bootagent.DefaultRebootDelay, console)
	}
	logger.Info("kiln-init starting", "config", cfg)

	agent := &bootagent.Agent{
		Config:   cfg,
		Paths:    paths,
		Modules:  sys,
		Network:  &bootagent.LinuxNetwork{Logger: logger},
		Fetcher:  &bootagent.Fetcher{Progress: console, Logger: logger},
		Mounter:  sys,
		Switcher: sys,
		Reporter: &bootagent.Reporter{Server: cfg.Server.String(), Token: cfg.Token, Logger: logger, Attempts: 3, Timeout: 5 * time.Second},
		Console:  console,
		Logger:   logger,
	}
	_ = agent.Run(ctx) // returns only if the reboot failed
	haltAfter(ctx, sys, 0, console)
}

// haltAfter waits d, reboots, and if that fails sleeps forever.
func haltAfter(ctx context.Context, sys *bootagent.LinuxSystem, d time.Duration, console io.Writer) {
	time.Sleep(d)
	if err := sys.Reboot(); err != nil {
		fmt.Fprintf(console, "kiln-init: %v; halting\n", err)
	}
	for ctx.Err() == nil { // PID 1 must not exit; a timer keeps the runtime from seeing a deadlock
		time.Sleep(time.Hour)
	}
	os.Exit(1)
}

// Command kiln-bench measures kiln against its peers on one machine, in one
// run, and prints a markdown table of medians and kiln/peer ratios (issue 7,
// `make bench`).
//
// Sections (select with -only):
//
//	dhcp     perfdhcp full DORA, stepped rate, against kilnd (leases in bbolt),
//	         kea-dhcp4 (memfile) and dnsmasq (--no-ping)
//	tftp     ipxe.efi and a 32 MiB file, 1 and 16 clients, atftp and curl
//	         (blksize 1468), from kilnd, dnsmasq and tftpd-hpa
//	http     1, 8 and 32 parallel downloads of a 1 GiB squashfs blob from
//	         kilnd and nginx (sendfile on), MB/s and server CPU s/GB; random
//	         128 KiB Range reads with wrk
//	boot     power-on to "Run /init" of a QEMU BIOS host netbooted by kilnd
//	         and by dnsmasq + nginx serving the same kernel and initrd
//	control  the 10,000-host rollout and store benchmarks (go test -bench)
//
// Every server runs in a private network namespace the program creates
// (198.18.0.0/15, a veth pair to a client namespace, nothing linked to the
// root namespace); every namespace and process is removed on return and on
// SIGINT/SIGTERM. Linux only, needs root.
//
// Usage (from the repository root, after `make build images`):
//
//	go run ./integration/bench/kiln-bench -bin bin [-only dhcp,tftp] [-reps 3] [-quick] [-out bench.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Sections in the order they run.
var allSections = []string{"dhcp", "tftp", "http", "boot", "control"}

// Config is the command line of one run.
type Config struct {
	Bin      string        // kilnd, kiln, kiln-init (make build); required
	Repo     string        // repository root (go.mod, firmware/, images/build)
	Only     []string      // sections to run; empty means all
	Reps     int           // repetitions of each measurement; 0 means 3
	Quick    bool          // smaller sizes and shorter steps: a smoke run
	Out      string        // markdown file to write besides stdout; empty: none
	Work     string        // scratch folder; empty: a new temp folder, removed at the end
	Cache    string        // where generated inputs (the squashfs blob) are kept between runs
	Keep     bool          // keep Work (logs) after the run
	Deadline time.Duration // bound of the whole run; 0 means 45m (10m with -quick)
}

func main() {
	var cfg Config
	var only string
	flag.StringVar(&cfg.Bin, "bin", "bin", "folder with kilnd, kiln and kiln-init (make build)")
	flag.StringVar(&cfg.Repo, "repo", ".", "repository root")
	flag.StringVar(&only, "only", "", "comma separated sections: "+strings.Join(allSections, ","))
	flag.IntVar(&cfg.Reps, "reps", 3, "repetitions (servers alternate within each)")
	flag.BoolVar(&cfg.Quick, "quick", false, "smoke run: small files, short steps, one repetition unless -reps is given")
	flag.StringVar(&cfg.Out, "out", "", "also write the markdown report to this file")
	flag.StringVar(&cfg.Work, "work", "", "scratch folder (default: a temp folder, removed unless -keep)")
	flag.StringVar(&cfg.Cache, "cache", "", "cache of generated inputs (default: REPO/.work/bench-cache)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the scratch folder (server logs) after the run")
	flag.DurationVar(&cfg.Deadline, "deadline", 0, "bound of the whole run (default 45m, 10m with -quick)")
	flag.Parse()
	repsSet := false
	flag.Visit(func(f *flag.Flag) { repsSet = repsSet || f.Name == "reps" })
	if cfg.Quick && !repsSet {
		cfg.Reps = 1
	}
	if only != "" {
		cfg.Only = strings.Split(only, ",")
	}
	if err := cfg.normalize(); err != nil {
		fmt.Fprintln(os.Stderr, "kiln-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	res, err := run(ctx, cfg, os.Stdout)
	report := res.Markdown(cfg)
	fmt.Println()
	fmt.Print(report)
	if cfg.Out != "" {
		if werr := os.WriteFile(cfg.Out, []byte(report), 0o644); werr != nil {
			fmt.Fprintln(os.Stderr, "kiln-bench:", werr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln-bench:", err)
		os.Exit(1)
	}
}

// normalize applies defaults and checks the config; errors name the flag.
func (c *Config) normalize() error {
	if c.Reps == 0 {
		c.Reps = 3
	}
	if c.Reps < 0 || c.Reps > 20 {
		return fmt.Errorf("-reps %d: want 1..20", c.Reps)
	}
	for _, s := range c.Only {
		found := false
		for _, a := range allSections {
			found = found || a == s
		}
		if !found {
			return fmt.Errorf("-only: unknown section %q (want some of %s)", s, strings.Join(allSections, ","))
		}
	}
	if c.Deadline == 0 {
		c.Deadline = 45 * time.Minute
		if c.Quick {
			c.Deadline = 10 * time.Minute
		}
	}
	if c.Deadline < 0 {
		return fmt.Errorf("-deadline %s: must be positive", c.Deadline)
	}
	var err error
	if c.Repo, err = filepath.Abs(c.Repo); err != nil {
		return fmt.Errorf("-repo: %w", err)
	}
	if _, err := os.Stat(filepath.Join(c.Repo, "go.mod")); err != nil {
		return fmt.Errorf("-repo %s: not the repository root: %w", c.Repo, err)
	}
	if c.Bin, err = filepath.Abs(c.Bin); err != nil {
		return fmt.Errorf("-bin: %w", err)
	}
	for _, b := range []string{"kilnd", "kiln", "kiln-init"} {
		if _, err := os.Stat(filepath.Join(c.Bin, b)); err != nil {
			return fmt.Errorf("-bin %s: %w (run make build)", c.Bin, err)
		}
	}
	if c.Cache == "" {
		c.Cache = filepath.Join(c.Repo, ".work", "bench-cache")
	}
	return nil
}

// want reports whether section s was selected.
func (c Config) want(s string) bool {
	if len(c.Only) == 0 {
		return true
	}
	for _, o := range c.Only {
		if o == s {
			return true
		}
	}
	return false
}

// Package cli is the kiln command-line interface: cobra commands over the
// API client. Tables for people, -o json for scripts, progress for long work,
// and exit codes scripts can trust (see ExitCode).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/immutableinfra/kiln/pkg/api"
)

// Exit codes.
const (
	ExitOK      = 0 // success
	ExitError   = 1 // the operation failed (kilnd said no, or I/O)
	ExitUsage   = 2 // bad command line
	ExitRollout = 3 // a waited-for rollout ended failed or cancelled
)

// DefaultServer is where the CLI finds a local kilnd.
const DefaultServer = "http://127.0.0.1:8080"

// Env looks up environment variables (os.LookupEnv in production).
type Env func(string) (string, bool)

type usageError struct{ error }
type rolloutError struct{ error }

// app is one CLI invocation.
type app struct {
	ctx      context.Context
	out, err io.Writer
	env      Env
	server   string
	token    string
	output   string
	client   *api.Client
	isTTY    bool
	// parsed is set once cobra has accepted the command line (flags and
	// arguments) and a command is about to run.
	parsed bool
}

// Run executes the CLI with args and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, env Env) int {
	a := &app{ctx: ctx, out: stdout, err: stderr, env: env, isTTY: isTerminal(stderr)}
	root := a.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "kiln:", err)
	var ue usageError
	var re rolloutError
	switch {
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &re):
		return ExitRollout
	case !a.parsed:
		// cobra refused the command line (unknown command or flag, bad
		// flag value, wrong number of arguments) before any command ran.
		// Deciding this by state, not by the error text, keeps an error
		// from kilnd that happens to say "invalid argument" an exit 1.
		return ExitUsage
	}
	return ExitError
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "kiln drives kilnd: images, hosts, assignments and rollouts of immutable netbooted machines",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			a.parsed = true
			if a.output != "table" && a.output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", a.output)}
			}
			return nil
		},
	}
	server, _ := a.env("KILN_SERVER")
	if server == "" {
		server = DefaultServer
	}
	root.PersistentFlags().StringVar(&a.server, "server", server, "kilnd API URL [KILN_SERVER]")
	root.PersistentFlags().StringVar(&a.token, "token", "", "API token [KILN_TOKEN; default: DATA_DIR/admin.token of a local kilnd]")
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	root.AddCommand(a.imageCmd(), a.hostCmd(), a.assignCmd(), a.revertCmd(), a.historyCmd(), a.reimageCmd(),
		a.rolloutCmd(), a.refreshCmd(), a.eventsCmd(), a.backupCmd())
	for _, c := range root.Commands() {
		refuseUnknownSubcommands(c)
	}
	return root
}

// refuseUnknownSubcommands makes every command that only groups
// subcommands ("kiln host") fail with a usage error on an unknown
// subcommand: cobra would print the help and exit 0.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	if cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q (see %s --help)", args[0], cmd.CommandPath(), cmd.CommandPath())}
			}
			return cmd.Help()
		}
	}
	for _, c := range cmd.Commands() {
		refuseUnknownSubcommands(c)
	}
}

// api returns the client, finding the token on first use.
func (a *app) api() (*api.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	tok := a.token
	if tok == "" {
		tok, _ = a.env("KILN_TOKEN")
	}
	if tok == "" {
		dir, _ := a.env("KILN_DATA_DIR")
		if dir == "" {
			dir = "/var/lib/kiln"
		}
		b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			return nil, fmt.Errorf("no API token: set KILN_TOKEN (or run where %s is readable): %v", filepath.Join(dir, "admin.token"), err)
		}
		tok = strings.TrimSpace(string(b))
	}
	actor := "kiln"
	if u, err := user.Current(); err == nil {
		actor = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		actor += "@" + h
	}
	c, err := api.NewClient(a.server, tok, actor, nil)
	if err != nil {
		return nil, usageError{err}
	}
	a.client = c
	return c, nil
}

// print writes v as JSON with -o json, else calls table with a tabwriter.
func (a *app) print(v any, table func(w io.Writer)) error {
	if a.output == "json" {
		enc := json.NewEncoder(a.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d (see --help)", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}

package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

// rolloutFlags are the options shared by reimage, refresh and revert --reimage.
type rolloutFlags struct {
	batch, maxFailures int
	bootTimeout        time.Duration
	autoRevert, wait   bool
	reason             string
}

func (f *rolloutFlags) add(cmd *cobra.Command, batchDefault bool) {
	fl := cmd.Flags()
	if batchDefault {
		fl.IntVar(&f.batch, "batch", 1, "hosts reimaged at a time")
		fl.IntVar(&f.maxFailures, "max-failures", 0, "failed hosts tolerated; one more stops the rollout")
		fl.BoolVar(&f.autoRevert, "auto-revert", false, "reimage failed hosts back to the image they had before")
	}
	fl.DurationVar(&f.bootTimeout, "boot-timeout", 0, "time a host has to report booted after its power cycle (default: kilnd's --boot-timeout)")
	fl.BoolVar(&f.wait, "wait", false, "follow the rollout until it ends; exit 3 when it fails")
	fl.StringVar(&f.reason, "reason", "", "why, for the history and events")
}

func (f *rolloutFlags) timeout() string {
	if f.bootTimeout == 0 {
		return ""
	}
	return f.bootTimeout.String()
}

func (a *app) reimageCmd() *cobra.Command {
	var f rolloutFlags
	var sel string
	cmd := &cobra.Command{
		Use:   "reimage (HOST... | --selector SEL) REF",
		Short: "Roll an image out: assign, next boot from network, power-cycle, wait for booted, in batches",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			hosts, ref, err := hostsAndRef(args, sel)
			if err != nil {
				return err
			}
			c, err := a.api()
			if err != nil {
				return err
			}
			ro, err := c.StartRollout(a.ctx, api.RolloutRequest{Hosts: hosts, Selector: sel, Ref: ref, Batch: f.batch,
				MaxFailures: f.maxFailures, BootTimeout: f.timeout(), AutoRevert: f.autoRevert, Reason: f.reason})
			if err != nil {
				return err
			}
			return a.started(ro, f.wait)
		},
	}
	f.add(cmd, true)
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label selector instead of host names")
	return cmd
}

func (a *app) refreshCmd() *cobra.Command {
	var f rolloutFlags
	var sel, image string
	cmd := &cobra.Command{
		Use:   "refresh --image NAME [--selector SEL]",
		Short: "Reimage the selected hosts that are not on NAME@latest yet (a no-op when all are)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return usageError{fmt.Errorf("--image is required")}
			}
			c, err := a.api()
			if err != nil {
				return err
			}
			res, err := c.Refresh(a.ctx, api.RefreshRequest{Selector: sel, Image: image, Batch: f.batch, MaxFailures: f.maxFailures,
				BootTimeout: f.timeout(), AutoRevert: f.autoRevert, Reason: f.reason})
			if err != nil {
				return err
			}
			if res.NothingToDo {
				return a.print(res, func(w io.Writer) { fmt.Fprintf(w, "nothing to do: every selected host is on %s@latest\n", image) })
			}
			return a.started(*res.Rollout, f.wait)
		},
	}
	f.add(cmd, true)
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label selector (default: every host)")
	cmd.Flags().StringVar(&image, "image", "", "image NAME whose newest version the hosts should run")
	return cmd
}

func (a *app) revertCmd() *cobra.Command {
	var f rolloutFlags
	var to string
	var reimage bool
	cmd := &cobra.Command{
		Use:   "revert HOST [--to REF] [--reimage]",
		Short: "Assign a host its previous image (with --reimage also power-cycle it into it and wait)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			if reimage {
				ro, err := c.StartRollout(a.ctx, api.RolloutRequest{Revert: args[0], Ref: to, BootTimeout: f.timeout(), Reason: f.reason})
				if err != nil {
					return err
				}
				return a.started(ro, true)
			}
			h, err := c.Revert(a.ctx, args[0], api.RevertRequest{To: to, Reason: f.reason})
			if err != nil {
				return err
			}
			return a.print(h, func(w io.Writer) {
				fmt.Fprintf(w, "%s\tdesired image %s (takes effect at its next boot; --reimage power-cycles it now)\n", h.Name, h.DesiredImage)
			})
		},
	}
	f.add(cmd, false)
	cmd.Flags().StringVar(&to, "to", "", "image to revert to (default: the previous distinct image in the host's history)")
	cmd.Flags().BoolVar(&reimage, "reimage", false, "power-cycle the host into the image and wait for it to boot")
	return cmd
}

// started prints a new rollout and, with wait, follows it.
func (a *app) started(ro fleet.Rollout, wait bool) error {
	if !wait {
		return a.print(ro, func(w io.Writer) {
			fmt.Fprintf(w, "rollout %s started: %s of %d host(s) to %s\n", ro.ID, ro.Kind, len(ro.Hosts), ro.Image)
			fmt.Fprintf(w, "follow it with: kiln rollout watch %s\n", ro.ID)
		})
	}
	if a.output != "json" {
		fmt.Fprintf(a.err, "rollout %s: %s of %d host(s) to %s, batch %d, max failures %d\n", ro.ID, ro.Kind, len(ro.Hosts), ro.Image, ro.Batch, ro.MaxFailures)
	}
	return a.watch(ro.ID)
}

// watch polls the rollout until it is done, showing a bar and each host's
// phase changes, then prints the final status; a failed or cancelled
// rollout is a rolloutError (exit 3).
func (a *app) watch(id string) error {
	c, err := a.api()
	if err != nil {
		return err
	}
	seen := map[string]fleet.HostState{}
	var bar *progressbar.ProgressBar
	for {
		st, err := c.Rollout(a.ctx, id)
		if err != nil {
			return err
		}
		if bar == nil && a.isTTY && a.output != "json" {
			bar = progressbar.NewOptions(st.Counts.Total, progressbar.OptionSetWriter(a.err), progressbar.OptionSetDescription("rollout "+id),
				progressbar.OptionShowCount(), progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish())
		}
		if a.output != "json" {
			for _, h := range st.Hosts {
				if seen[h.Host] == h.State {
					continue
				}
				seen[h.Host] = h.State
				line := fmt.Sprintf("  %-20s %-14s", h.Host, h.State)
				if h.Error != "" {
					line += " " + h.Error
				}
				if bar != nil {
					bar.Clear()
				}
				fmt.Fprintln(a.err, strings.TrimRight(line, " "))
			}
			if bar != nil {
				done := st.Counts.Total - st.Counts.Pending - st.Counts.InFlight
				bar.Set(done)
			}
		}
		if st.Rollout.Over() {
			if bar != nil {
				bar.Finish()
			}
			if err := a.printRollout(st); err != nil {
				return err
			}
			if st.Rollout.State != fleet.RolloutSucceeded {
				msg := fmt.Sprintf("rollout %s %s", id, st.Rollout.State)
				if st.Rollout.Error != "" {
					msg += ": " + st.Rollout.Error
				}
				return rolloutError{fmt.Errorf("%s", msg)}
			}
			return nil
		}
		select {
		case <-a.ctx.Done():
			return a.ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *app) printRollout(st api.RolloutStatus) error {
	return a.print(st, func(w io.Writer) {
		ro := st.Rollout
		fmt.Fprintf(w, "rollout:\t%s (%s)\n", ro.ID, ro.Kind)
		fmt.Fprintf(w, "image:\t%s\t%s\n", ro.Image, ro.Digest)
		if ro.Selector != "" {
			fmt.Fprintf(w, "selector:\t%s\n", ro.Selector)
		}
		fmt.Fprintf(w, "state:\t%s\n", ro.State)
		if ro.Error != "" {
			fmt.Fprintf(w, "error:\t%s\n", ro.Error)
		}
		fmt.Fprintf(w, "batch / max failures:\t%d / %d, auto-revert %v, boot timeout %s\n", ro.Batch, ro.MaxFailures, ro.AutoRevert, ro.BootTimeout)
		k := st.Counts
		fmt.Fprintf(w, "hosts:\t%d total, %d booted, %d failed, %d reverted, %d in flight, %d pending\n", k.Total, k.Booted, k.Failed, k.Reverted, k.InFlight, k.Pending)
		fmt.Fprintln(w, "\nHOST\tBATCH\tSTATE\tFROM\tERROR")
		for _, h := range st.Hosts {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", h.Host, h.Batch, h.State, orDash(h.From), orDash(h.Error))
		}
	})
}

func (a *app) rolloutCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "List, show, watch, pause, resume and cancel rollouts"}
	list := &cobra.Command{
		Use: "list", Short: "List rollouts", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			ros, err := c.Rollouts(a.ctx)
			if err != nil {
				return err
			}
			return a.print(ros, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tKIND\tIMAGE\tHOSTS\tSTATE\tACTOR\tCREATED")
				for _, ro := range ros {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", ro.ID, ro.Kind, ro.Image, max(len(ro.Hosts), ro.Counts.Total), ro.State, ro.Actor, ro.Created.Format("2006-01-02 15:04:05"))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a rollout and each host's progress", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			st, err := c.Rollout(a.ctx, args[0])
			if err != nil {
				return err
			}
			return a.printRollout(st)
		},
	}
	watch := &cobra.Command{
		Use: "watch ID", Short: "Follow a rollout until it ends (exit 3 when it fails)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.watch(args[0]) },
	}
	cmd.AddCommand(list, show, watch)
	for _, action := range []string{"pause", "resume", "cancel"} {
		cmd.AddCommand(&cobra.Command{
			Use: action + " ID", Short: strings.ToUpper(action[:1]) + action[1:] + " a rollout", Args: exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.api()
				if err != nil {
					return err
				}
				st, err := c.RolloutAction(a.ctx, args[0], action)
				if err != nil {
					return err
				}
				return a.printRollout(st)
			},
		})
	}
	return cmd
}

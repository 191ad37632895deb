package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

func (a *app) hostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Add, list, show, change, label, power and remove hosts"}
	cmd.AddCommand(a.hostAdd(), a.hostList(), a.hostShow(), a.hostSet(), a.hostLabel(), a.hostRm(), a.hostPower(), a.hostReports(), a.hostBootMode())
	return cmd
}

func (a *app) hostAdd() *cobra.Command {
	var req api.HostRequest
	var labels []string
	var pwFile string
	cmd := &cobra.Command{
		Use:   "add NAME --mac MAC [--mac MAC...]",
		Short: "Register a host",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			var err error
			if req.Labels, err = fleet.ParseLabels(labels); err != nil {
				return usageError{err}
			}
			if pwFile != "" {
				if req.BMCPassword, err = readPassword(pwFile); err != nil {
					return err
				}
			}
			c, err := a.api()
			if err != nil {
				return err
			}
			h, err := c.CreateHost(a.ctx, req)
			if err != nil {
				return err
			}
			return a.print(h, func(w io.Writer) { fmt.Fprintf(w, "added host %s\n", h.Name); printHost(w, h) })
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.MACs, "mac", nil, "MAC address of a NIC (repeat for each NIC)")
	f.StringVar(&req.IP, "ip", "", "fixed address ADDR/PREFIX (default: a lease from the pool)")
	f.StringVar(&req.Gateway, "gateway", "", "default gateway for the fixed address")
	f.StringArrayVar(&labels, "label", nil, "label k=v (repeatable)")
	f.StringVar(&req.BMCURL, "bmc", "", "BMC URL: ipmi://USER@HOST[:PORT] or redfish://USER@HOST[:PORT]")
	f.StringVar(&pwFile, "bmc-password-file", "", "file holding the BMC password (stored encrypted, never shown)")
	f.BoolVar(&req.BMCInsecureTLS, "bmc-insecure-tls", false, "accept the BMC's self-signed certificate (Redfish)")
	f.BoolVar(&req.NetbootDisabled, "no-netboot", false, "register the host but do not netboot it")
	f.StringVar(&req.BootMode, "boot-mode", "", "firmware mode for BMC network boots: bios or uefi (default: what the host last booted with)")
	return cmd
}

// readPassword reads a BMC password from a file: its first line.
func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--bmc-password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	if pw = strings.TrimRight(pw, "\r"); pw == "" {
		return "", usageError{fmt.Errorf("--bmc-password-file %s is empty", file)}
	}
	return pw, nil
}

func (a *app) hostSet() *cobra.Command {
	var req api.HostUpdate
	var macs []string
	var ip, gateway, bmcURL, pwFile string
	var noPassword, insecureTLS, netboot bool
	cmd := &cobra.Command{
		Use:   "set NAME [--mac MAC...] [--ip ADDR/PREFIX] [--gateway ADDR] [--bmc URL] [--bmc-password-file FILE] ...",
		Short: "Change a host's NICs, address, BMC or netboot; history and labels stay",
		Long: `Change what the flags name and leave the rest. --mac replaces all MACs (a new
NIC or mainboard). An empty --ip "" moves the host to the pool, --gateway "" drops
the gateway, --bmc "" removes the BMC and its stored password.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("mac") {
				req.MACs = macs
			}
			if f.Changed("ip") {
				req.IP = &ip
			}
			if f.Changed("gateway") {
				req.Gateway = &gateway
			}
			if f.Changed("bmc") {
				req.BMCURL = &bmcURL
			}
			if f.Changed("bmc-insecure-tls") {
				req.BMCInsecureTLS = &insecureTLS
			}
			if f.Changed("netboot") {
				req.NetbootDisabled = ptr(!netboot)
			}
			switch {
			case pwFile != "" && noPassword:
				return usageError{fmt.Errorf("--bmc-password-file and --no-bmc-password exclude each other")}
			case pwFile != "":
				pw, err := readPassword(pwFile)
				if err != nil {
					return err
				}
				req.BMCPassword = &pw
			case noPassword:
				req.BMCPassword = ptr("")
			}
			c, err := a.api()
			if err != nil {
				return err
			}
			h, err := c.UpdateHost(a.ctx, args[0], req)
			if err != nil {
				return err
			}
			return a.print(h, func(w io.Writer) { fmt.Fprintf(w, "changed host %s\n", h.Name); printHost(w, h) })
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&macs, "mac", nil, "MAC address of a NIC (repeat for each NIC); replaces all MACs")
	f.StringVar(&ip, "ip", "", `fixed address ADDR/PREFIX ("": a lease from the pool)`)
	f.StringVar(&gateway, "gateway", "", `default gateway for the fixed address ("": none)`)
	f.StringVar(&bmcURL, "bmc", "", `BMC URL: ipmi://USER@HOST[:PORT] or redfish://USER@HOST[:PORT] ("": no BMC)`)
	f.StringVar(&pwFile, "bmc-password-file", "", "file holding the new BMC password (stored encrypted, never shown)")
	f.BoolVar(&noPassword, "no-bmc-password", false, "remove the stored BMC password")
	f.BoolVar(&insecureTLS, "bmc-insecure-tls", false, "accept the BMC's self-signed certificate (Redfish)")
	f.BoolVar(&netboot, "netboot", true, "netboot the host (--netboot=false: kiln answers it no boot file)")
	return cmd
}

func ptr[T any](v T) *T { return &v }

func printHost(w io.Writer, h fleet.Host) {
	fmt.Fprintf(w, "name:\t%s\n", h.Name)
	fmt.Fprintf(w, "macs:\t%s\n", strings.Join(h.MACs, ", "))
	ip := "pool"
	if h.IP.IsValid() {
		ip = h.IP.String()
		if h.Gateway.IsValid() {
			ip += " via " + h.Gateway.String()
		}
	}
	fmt.Fprintf(w, "ip:\t%s\n", ip)
	fmt.Fprintf(w, "labels:\t%s\n", orDash(fleet.SortedLabels(h.Labels)))
	bmc := "-"
	if h.BMC != nil {
		bmc = h.BMC.URL
		if h.BMC.HasPassword {
			bmc += " (password stored)"
		}
	}
	fmt.Fprintf(w, "bmc:\t%s\n", bmc)
	fmt.Fprintf(w, "netboot:\t%v\n", !h.NetbootDisabled)
	mode := orDash(h.BootMode)
	if h.BootModeOverride != "" {
		mode = h.BootModeOverride + " (set by an operator)"
	}
	fmt.Fprintf(w, "boot mode:\t%s\n", mode)
	fmt.Fprintf(w, "desired image:\t%s\n", orDash(h.DesiredImage))
	booted := orDash(h.BootedImage)
	if h.BootedImage != "" {
		booted += " at " + h.BootedAt.Format("2006-01-02 15:04:05Z07:00")
	}
	fmt.Fprintf(w, "booted image:\t%s\n", booted)
	if r := h.LastReport; r != nil {
		msg := r.Phase
		if r.Message != "" {
			msg += ": " + r.Message
		}
		fmt.Fprintf(w, "last report:\t%s (%s, %s)\n", msg, r.Image, r.Time.Format("2006-01-02 15:04:05Z07:00"))
	}
}

func (a *app) hostList() *cobra.Command {
	var sel string
	cmd := &cobra.Command{
		Use: "list [--selector k=v,...]", Short: "List hosts", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			hosts, err := c.ListHosts(a.ctx, sel)
			if err != nil {
				return err
			}
			return a.print(hosts, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tMACS\tLABELS\tDESIRED\tBOOTED\tLAST REPORT")
				for _, h := range hosts {
					last := "-"
					if h.LastReport != nil {
						last = h.LastReport.Phase
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, strings.Join(h.MACs, ","), orDash(fleet.SortedLabels(h.Labels)),
						orDash(h.DesiredImage), orDash(h.BootedImage), last)
				}
			})
		},
	}
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label selector, e.g. rack=r12,role!=db")
	return cmd
}

func (a *app) hostShow() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a host", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			h, err := c.Host(a.ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(h, func(w io.Writer) { printHost(w, h) })
		},
	}
}

func (a *app) hostLabel() *cobra.Command {
	return &cobra.Command{
		Use: "label NAME k=v... [k-...]", Short: "Set (k=v) or remove (k-) labels", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			h, err := c.LabelHost(a.ctx, args[0], args[1:])
			if err != nil {
				return err
			}
			return a.print(h, func(w io.Writer) { fmt.Fprintf(w, "%s\t%s\n", h.Name, orDash(fleet.SortedLabels(h.Labels))) })
		},
	}
}

func (a *app) hostRm() *cobra.Command {
	return &cobra.Command{
		Use: "rm NAME", Short: "Remove a host with its history", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			if err := c.DeleteHost(a.ctx, args[0]); err != nil {
				return err
			}
			return a.print(map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "removed host %s\n", args[0]) })
		},
	}
}

func (a *app) hostPower() *cobra.Command {
	return &cobra.Command{
		Use: "power NAME status|on|off|cycle", Short: "Power control through the host's BMC", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[1] {
			case "status", "on", "off", "cycle":
			default:
				return usageError{fmt.Errorf("power action %q: want status, on, off or cycle", args[1])}
			}
			c, err := a.api()
			if err != nil {
				return err
			}
			p, err := c.Power(a.ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(p, func(w io.Writer) { fmt.Fprintf(w, "%s\tpower %s\n", p.Host, p.State) })
		},
	}
}

func (a *app) hostBootMode() *cobra.Command {
	return &cobra.Command{
		Use: "boot-mode NAME bios|uefi|auto", Short: "Set the firmware mode kiln asks the BMC to network-boot the host in", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			h, err := c.SetBootMode(a.ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(h, func(w io.Writer) {
				fmt.Fprintf(w, "%s	next network boot in %s mode\n", h.Name, orDash(h.NextBootMode()))
			})
		},
	}
}

func (a *app) hostReports() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use: "reports NAME", Short: "Show a host's newest boot reports", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			reps, err := c.Reports(a.ctx, args[0], limit)
			if err != nil {
				return err
			}
			return a.print(reps, func(w io.Writer) {
				fmt.Fprintln(w, "TIME\tATTEMPT\tIMAGE\tPHASE\tMESSAGE")
				for _, r := range reps {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", r.Time.Format("2006-01-02 15:04:05"), r.Attempt, r.Image, r.Phase, orDash(r.Message))
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "reports to show")
	return cmd
}

func (a *app) assignCmd() *cobra.Command {
	var sel, reason string
	cmd := &cobra.Command{
		Use:   "assign (HOST... | --selector SEL) REF",
		Short: "Set the image hosts boot next (takes effect at their next boot)",
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
			res, err := c.Assign(a.ctx, api.AssignRequest{Hosts: hosts, Selector: sel, Ref: ref, Reason: reason})
			if err != nil {
				return err
			}
			return a.print(res, func(w io.Writer) {
				for _, h := range res {
					fmt.Fprintf(w, "%s\tdesired image %s\n", h.Name, h.DesiredImage)
				}
			})
		},
	}
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label selector instead of host names")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the history")
	return cmd
}

// hostsAndRef splits "HOST... REF" (or just "REF" with a selector).
func hostsAndRef(args []string, sel string) ([]string, string, error) {
	ref := args[len(args)-1]
	hosts := args[:len(args)-1]
	if sel != "" && len(hosts) > 0 {
		return nil, "", usageError{fmt.Errorf("give host names or --selector, not both")}
	}
	if sel == "" && len(hosts) == 0 {
		return nil, "", usageError{fmt.Errorf("name at least one host, or --selector")}
	}
	return hosts, ref, nil
}

func (a *app) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use: "history HOST", Short: "Every change of a host's image: time, from, to, actor, reason", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			hist, err := c.History(a.ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(hist, func(w io.Writer) {
				fmt.Fprintln(w, "TIME\tFROM\tTO\tACTOR\tREASON")
				for _, e := range hist {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", e.Time.Format("2006-01-02 15:04:05"), orDash(e.From), orDash(e.To), e.Actor, orDash(e.Reason))
				}
			})
		},
	}
}

func (a *app) eventsCmd() *cobra.Command {
	var host, rollout string
	var limit int
	cmd := &cobra.Command{
		Use: "events", Short: "The event log: who did what to which host or rollout", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			evs, err := c.Events(a.ctx, host, rollout, limit)
			if err != nil {
				return err
			}
			return a.print(evs, func(w io.Writer) {
				fmt.Fprintln(w, "TIME\tKIND\tHOST\tROLLOUT\tACTOR\tMESSAGE")
				for _, e := range evs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Format("2006-01-02 15:04:05"), e.Kind, orDash(e.Host), orDash(e.Rollout), orDash(e.Actor), e.Message)
				}
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only events of this host")
	cmd.Flags().StringVar(&rollout, "rollout", "", "only events of this rollout")
	cmd.Flags().IntVar(&limit, "limit", 100, "newest events to show (-1 for all)")
	return cmd
}

func (a *app) backupCmd() *cobra.Command {
	return &cobra.Command{
		Use: "backup FILE", Short: "Write a consistent copy of kilnd's database", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			tmp := args[0] + ".partial"
			f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			err = c.Backup(a.ctx, f)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, args[0]); err != nil {
				return err
			}
			fi, _ := os.Stat(args[0])
			return a.print(map[string]any{"file": args[0], "bytes": fi.Size()}, func(w io.Writer) {
				fmt.Fprintf(w, "wrote %s (%s)\n", args[0], human(fi.Size()))
			})
		},
	}
}

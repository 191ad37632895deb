package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Import, list, show and remove image versions"}
	cmd.AddCommand(a.imageImport(), a.imageList(), a.imageShow(), a.imageRm(), a.imageGC())
	return cmd
}

func (a *app) imageImport() *cobra.Command {
	var rootfs, kernel, initrd, cmdline, arch string
	cmd := &cobra.Command{
		Use:   "import NAME@VERSION --rootfs FILE",
		Short: "Import an image version (a squashfs; kilnd finds the kernel inside and builds the initramfs)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rootfs == "" {
				return usageError{fmt.Errorf("--rootfs is required")}
			}
			c, err := a.api()
			if err != nil {
				return err
			}
			var files api.ImportFiles
			var closers []io.Closer
			defer func() {
				for _, c := range closers {
					c.Close()
				}
			}()
			open := func(path, name string) (io.Reader, error) {
				if path == "" {
					return nil, nil
				}
				f, err := os.Open(path)
				if err != nil {
					return nil, fmt.Errorf("--%s: %w", name, err)
				}
				closers = append(closers, f)
				fi, err := f.Stat()
				if err != nil {
					return nil, err
				}
				return a.progress(f, "uploading "+name, fi.Size()), nil
			}
			if files.Rootfs, err = open(rootfs, "rootfs"); err != nil {
				return err
			}
			if kernel != "" {
				if files.Kernel, err = open(kernel, "kernel"); err != nil {
					return err
				}
			}
			if initrd != "" {
				if files.Initrd, err = open(initrd, "initrd"); err != nil {
					return err
				}
			}
			if a.output != "json" {
				fmt.Fprintf(a.err, "importing %s (kilnd verifies the squashfs%s)...\n", args[0], map[bool]string{true: "", false: ", finds its kernel and builds its initramfs"}[kernel != "" && initrd != ""])
			}
			res, err := c.ImportImage(a.ctx, args[0], arch, cmdline, files)
			if err != nil {
				return err
			}
			return a.print(res, func(w io.Writer) {
				verb := "imported"
				if !res.Created {
					verb = "already imported with identical content:"
				}
				fmt.Fprintf(w, "%s %s\n", verb, res.Image.Ref)
				printImage(w, res.Image)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&rootfs, "rootfs", "", "the image's root filesystem (squashfs) [required]")
	f.StringVar(&kernel, "kernel", "", "kernel to boot (default: /boot/vmlinuz-* inside the rootfs)")
	f.StringVar(&initrd, "initrd", "", "initramfs to boot (default: built by kilnd from kiln-init and the image's modules)")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line of the image (e.g. console=ttyS0)")
	f.StringVar(&arch, "arch", fleet.ArchX86_64, "architecture: x86_64 or arm64")
	return cmd
}

func printImage(w io.Writer, im fleet.Image) {
	fmt.Fprintf(w, "ref:\t%s\n", im.Ref)
	fmt.Fprintf(w, "arch:\t%s\n", im.Arch)
	fmt.Fprintf(w, "created:\t%s\n", im.Created.Format("2006-01-02 15:04:05Z07:00"))
	fmt.Fprintf(w, "rootfs:\t%s\t%s\n", im.Rootfs.Digest, human(im.Rootfs.Size))
	kernel := human(im.Kernel.Size)
	if im.KernelPath != "" {
		kernel += " (from /" + im.KernelPath + ")"
	}
	fmt.Fprintf(w, "kernel:\t%s\t%s\n", im.Kernel.Digest, kernel)
	initrd := human(im.Initrd.Size)
	if im.InitrdBuilt {
		initrd += " (built by kilnd for kernel " + im.KernelVersion + ")"
	}
	fmt.Fprintf(w, "initrd:\t%s\t%s\n", im.Initrd.Digest, initrd)
	fmt.Fprintf(w, "cmdline:\t%s\n", orDash(im.Cmdline))
}

func (a *app) imageList() *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List image versions", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			imgs, err := c.Images(a.ctx)
			if err != nil {
				return err
			}
			return a.print(imgs, func(w io.Writer) {
				fmt.Fprintln(w, "REF\tARCH\tROOTFS\tSIZE\tCREATED")
				for _, im := range imgs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", im.Ref, im.Arch, short(string(im.Rootfs.Digest)), human(im.Rootfs.Size), im.Created.Format("2006-01-02 15:04"))
				}
			})
		},
	}
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func (a *app) imageShow() *cobra.Command {
	return &cobra.Command{
		Use: "show REF", Short: "Show an image version (REF may be NAME@latest)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			im, err := c.Image(a.ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(im, func(w io.Writer) { printImage(w, im) })
		},
	}
}

func (a *app) imageRm() *cobra.Command {
	return &cobra.Command{
		Use: "rm NAME@VERSION", Short: "Remove an image version no host uses or could revert to", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			res, err := c.RemoveImage(a.ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(res, func(w io.Writer) { fmt.Fprintf(w, "removed %s, %s freed\n", res.Ref, human(res.BytesFreed)) })
		},
	}
}

func (a *app) imageGC() *cobra.Command {
	var keep int
	var dry bool
	cmd := &cobra.Command{
		Use: "gc", Short: "Remove unused versions beyond the newest --keep per name, and orphan blobs", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.api()
			if err != nil {
				return err
			}
			res, err := c.GC(a.ctx, keep, dry)
			if err != nil {
				return err
			}
			return a.print(res, func(w io.Writer) {
				verb := "removed"
				if dry {
					verb = "would remove"
				}
				for _, r := range res.Images {
					fmt.Fprintf(w, "%s image\t%s\n", verb, r)
				}
				for _, b := range res.OrphanBlobs {
					fmt.Fprintf(w, "%s orphan blob\t%s\n", verb, b)
				}
				for _, k := range res.Kept {
					fmt.Fprintf(w, "kept\t%s\n", k)
				}
				fmt.Fprintf(w, "%s %d image(s), %d orphan blob(s): %s\n", verb, len(res.Images), len(res.OrphanBlobs), human(res.BytesFreed))
			})
		},
	}
	cmd.Flags().IntVar(&keep, "keep", 3, "versions to keep per image name")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only say what would be removed")
	return cmd
}

package bootagent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// ErrModuleCycle is returned (wrapped, naming the modules) when modules.dep
// describes a dependency cycle.
var ErrModuleCycle = errors.New("module dependency cycle")

// ErrModuleMissing is returned (wrapped, naming the file) when a module that
// modules.dep lists is not present in the module directory.
var ErrModuleMissing = errors.New("module file missing")

// ErrModulesDep is returned (wrapped, with the line number) for a malformed
// modules.dep line.
var ErrModulesDep = errors.New("malformed modules.dep")

// ModuleDeps is a parsed modules.dep: for each module file (a path relative
// to /lib/modules/<kver>, as in modules.dep) the module files it depends on.
type ModuleDeps map[string][]string

// ParseModulesDep reads modules.dep ("mod.ko: dep1.ko dep2.ko" per line).
// Modules that appear only as a dependency are added with no dependencies of
// their own. Blank lines and lines starting with '#' are ignored.
func ParseModulesDep(r io.Reader) (ModuleDeps, error) {
	deps := ModuleDeps{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		mod = strings.TrimSpace(mod)
		if !ok || mod == "" || strings.ContainsAny(mod, " \t") {
			return nil, fmt.Errorf("%w: line %d: want \"module.ko: deps...\"", ErrModulesDep, n)
		}
		list := strings.Fields(rest)
		deps[mod] = append(deps[mod], list...)
		for _, d := range list {
			if _, ok := deps[d]; !ok {
				deps[d] = nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return deps, nil
}

// Order returns every module of deps in a load order: each module after all
// of its dependencies. The order is deterministic (modules are visited in
// lexical order of their path). A cycle gives an error wrapping
// ErrModuleCycle that names the modules on it.
func (deps ModuleDeps) Order() ([]string, error) {
	const (
		unseen = iota
		visiting
		done
	)
	state := make(map[string]int, len(deps))
	var (
		order []string
		stack []string
	)
	var visit func(m string) error
	visit = func(m string) error {
		switch state[m] {
		case done:
			return nil
		case visiting:
			i := slices.Index(stack, m)
			cycle := append(slices.Clone(stack[i:]), m)
			for j := range cycle {
				cycle[j] = ModuleName(cycle[j])
			}
			return fmt.Errorf("%w: %s", ErrModuleCycle, strings.Join(cycle, " -> "))
		}
		state[m] = visiting
		stack = append(stack, m)
		ds := slices.Clone(deps[m])
		slices.Sort(ds)
		for _, d := range ds {
			if err := visit(d); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[m] = done
		order = append(order, m)
		return nil
	}
	names := make([]string, 0, len(deps))
	for m := range deps {
		names = append(names, m)
	}
	slices.Sort(names)
	for _, m := range names {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ModuleName returns the kernel's name for a module file:
// "kernel/drivers/net/virtio_net.ko" -> "virtio_net" (dashes become
// underscores, compression suffixes are dropped).
func ModuleName(file string) string {
	b := path.Base(file)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// PlanModules reads modules.dep from dir (the /lib/modules/<kver> tree) and
// returns all of its module files in load order, as paths relative to dir.
// It checks that every file exists before anything is loaded, so a missing
// file is an error (wrapping ErrModuleMissing) rather than a half-loaded set.
// A directory without modules.dep gives fs.ErrNotExist (wrapped): the caller
// may treat it as "nothing to load".
func PlanModules(dir fs.FS) ([]string, error) {
	f, err := dir.Open("modules.dep")
	if err != nil {
		return nil, fmt.Errorf("open modules.dep: %w", err)
	}
	defer f.Close()
	deps, err := ParseModulesDep(f)
	if err != nil {
		return nil, err
	}
	order, err := deps.Order()
	if err != nil {
		return nil, err
	}
	for _, m := range order {
		st, err := fs.Stat(dir, m)
		if err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s", ErrModuleMissing, m)
		}
	}
	return order, nil
}

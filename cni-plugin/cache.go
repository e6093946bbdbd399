package cniplugin

import (
	"errors"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/netagent/netagent/internal/atomicfile"
)

// validID is what a container ID or interface name must look like to become
// part of a cache file name.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// cacheName returns the cache file name of an attachment, containerID + "-"
// + ifName. An ID or name that could leave the cache directory or is not
// [A-Za-z0-9][A-Za-z0-9_.-]* is refused with code 4 (invalid environment
// variable: they come from CNI_CONTAINERID and CNI_IFNAME).
func cacheName(containerID, ifName string) (string, error) {
	for _, v := range []struct{ env, val string }{{"CNI_CONTAINERID", containerID}, {"CNI_IFNAME", ifName}} {
		if !validID.MatchString(v.val) || strings.Contains(v.val, "..") {
			return "", errf(types.ErrInvalidEnvironmentVariables, "%s %q must match [A-Za-z0-9][A-Za-z0-9_.-]* without \"..\"", v.env, v.val)
		}
	}
	name := containerID + "-" + ifName
	if len(name) > 255 {
		return "", errf(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID and CNI_IFNAME are too long together (%d bytes)", len(name))
	}
	return name, nil
}

// isCacheName reports whether a file in the cache directory is a cache file
// (temporary files start with a dot).
func isCacheName(name string) bool {
	return validID.MatchString(name) && !strings.Contains(name, "..")
}

// cache keeps the delegate configs of the attachments, one file each, in a
// directory of mode 0700; files have mode 0600. All access goes through an
// os.Root, so no name can reach outside the directory.
type cache struct {
	dir string
}

// open opens the cache directory, creating it (mode 0700) when create is
// true. Without create, a missing directory is fs.ErrNotExist.
func (c cache) open(create bool) (*os.Root, error) {
	if create {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, err
		}
	}
	return os.OpenRoot(c.dir)
}

// write stores data under name atomically: temporary file, fsync, rename,
// fsync of the directory.
func (c cache) write(name string, data []byte) error {
	root, err := c.open(true)
	if err != nil {
		return err
	}
	defer root.Close()
	return atomicfile.WriteIn(root, name, data, 0o600)
}

// read returns the config stored under name; fs.ErrNotExist when there is
// none.
func (c cache) read(name string) ([]byte, error) {
	root, err := c.open(false)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.ReadFile(name)
}

// remove deletes name; a missing file or directory is not an error.
func (c cache) remove(name string) error {
	root, err := c.open(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// removeOrErr removes the cache file of name, as a CNI error on failure.
func (c cache) removeOrErr(name string) error {
	if err := c.remove(name); err != nil {
		return errf(types.ErrIOFailure, "removing the cached config: %v", err)
	}
	return nil
}

// list returns the names of the cache files; none when the directory does
// not exist.
func (c cache) list() ([]string, error) {
	entries, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && isCacheName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Package atomicfile replaces a file so that a reader sees either the old
// contents or the new, never a part, and so that the new contents survive a
// crash once the call returns: a temporary file in the same directory,
// written, fsynced, renamed over the name, and the directory fsynced.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, with mode perm exactly (the umask does
// not apply). The directory of path must exist.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer root.Close()
	return WriteIn(root, filepath.Base(path), data, perm)
}

// WriteIn replaces name inside root with data, with mode perm exactly. Every
// file it touches is reached through root, so name cannot lead outside it.
// The temporary file is named "." + base name + a random part + ".tmp", so
// that a listing can tell it from the files it stands in for, and is removed
// when the write fails.
func WriteIn(root *os.Root, name string, data []byte, perm fs.FileMode) (err error) {
	f, tmp, err := createTemp(root, name, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			root.Remove(tmp)
		}
	}()
	// Set the mode as asked, whatever the umask took away.
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := root.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(root, filepath.Dir(name))
}

// createTemp creates a new temporary file next to name.
func createTemp(root *os.Root, name string, perm fs.FileMode) (*os.File, string, error) {
	dir, base := filepath.Split(name)
	for range 100 {
		tmp := filepath.Join(dir, fmt.Sprintf(".%s.%016x.tmp", base, rand.Uint64()))
		f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, tmp, err
	}
	return nil, "", fmt.Errorf("atomicfile: no free temporary name next to %s", name)
}

// syncDir fsyncs directory dir of root, which makes a rename in it durable.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync of the directory: %w", err)
	}
	return nil
}

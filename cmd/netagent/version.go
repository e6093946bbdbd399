package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time, e.g. by the packaging:
//
//	go build -ldflags "-X main.version=$(git describe --tags --always --dirty) -X main.commit=$(git rev-parse HEAD)"
//
// When they are not set, the build information Go records in the binary
// fills them where it can: the module version (go install …@v1.2.3) and the
// VCS revision (a build inside a git checkout).
var (
	version = "0.1.0-dev"
	commit  = ""
)

// buildInfo is what `netagent version` prints.
type buildInfo struct {
	Version   string
	Commit    string // "" when unknown
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string // e.g. go1.26.0
	Platform  string // GOOS/GOARCH
}

// readBuildInfo combines the -ldflags values with what
// runtime/debug.ReadBuildInfo reports; -ldflags win.
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	bi.GoVersion = info.GoVersion
	if version == "0.1.0-dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		bi.Version = info.Main.Version
	}
	if commit == "" {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				bi.Commit = s.Value
			case "vcs.modified":
				bi.Modified = s.Value == "true"
			}
		}
	}
	return bi
}

// printVersion writes bi as `netagent version` shows it:
//
//	netagent 1.2.0
//	commit:  4f9c2e1b7d0a… (modified)
//	go:      go1.26.0 linux/amd64
func printVersion(w io.Writer, bi buildInfo) {
	fmt.Fprintf(w, "netagent %s\n", bi.Version)
	c := bi.Commit
	if c == "" {
		c = "unknown"
	}
	if bi.Modified {
		c += " (modified)"
	}
	fmt.Fprintf(w, "commit:  %s\n", c)
	fmt.Fprintf(w, "go:      %s %s\n", bi.GoVersion, bi.Platform)
}

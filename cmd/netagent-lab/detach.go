package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// detachTimeout bounds how long `up --detach` waits for the lab to come up.
const detachTimeout = 5 * time.Minute

// runDetached is `up --detach`: it runs `netagent-lab up` again in a new
// session with its output in DIR/up.log, waits until that process has
// brought the lab up (its state file says ready) and prints what it
// printed. The lab then runs in the background until `netagent-lab down`.
func runDetached(ctx context.Context, o *upOptions, args []string, stdout io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(o.dir, "up.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	defer logFile.Close()
	// The last --detach wins: the child stays in the foreground of its
	// own session.
	cmd := exec.Command(self, append(append([]string{"up"}, args...), "--detach=false")...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	ctx, cancel := context.WithTimeout(ctx, detachTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if s, err := readState(o.dir); err == nil && s.PID == cmd.Process.Pid && s.Ready {
			copyFile(stdout, logPath)
			fmt.Fprintf(stdout, "\nRunning in the background (pid %d); its output goes to %s.\n", s.PID, logPath)
			return nil
		}
		select {
		case err := <-done:
			copyFile(stdout, logPath)
			return fmt.Errorf("up: the lab did not come up (%v); its output is above and in %s", err, logPath)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
			copyFile(stdout, logPath)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("up: the lab was not up within %v: stopped it", detachTimeout)
			}
			return errors.New("up: interrupted: stopped the lab")
		case <-tick.C:
		}
	}
}

// copyFile writes the contents of the file at path to w.
func copyFile(w io.Writer, path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(w, f)
}

package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// agentUserHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const agentUserHZ = 100

// agentProcCPU returns the user+system CPU time of process pid.
func agentProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// fields are counted after its closing parenthesis, from field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, field := range f[11:13] { // utime (14), stime (15)
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / agentUserHZ, nil
}

// agentProcStatusKB returns a "kB" field of /proc/PID/status, e.g. "VmHWM".
func agentProcStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		num, unit, _ := strings.Cut(strings.TrimSpace(v), " ")
		if unit != "kB" {
			return 0, fmt.Errorf("/proc/%d/status: %s in %q", pid, field, unit)
		}
		return strconv.ParseInt(num, 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// agentChildrenCPU returns the user+system CPU time of this process's
// terminated and waited-for children.
func agentChildrenCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// agentProcComm returns the command name of process pid.
func agentProcComm(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b)), err
}

// agentCPUTimes is CPU time used so far: by the whole machine (every CPU's
// time neither idle nor waiting for I/O), by etcd, by the agents given,
// and by this benchmark's own process.
type agentCPUTimes struct {
	machine, etcd, agents, self time.Duration
}

// agentCPUSnapshot reads agentCPUTimes now, the agents being procs.
func agentCPUSnapshot(al *agentLab, procs []*lab.Proc) (agentCPUTimes, error) {
	var c agentCPUTimes
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return c, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return c, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var ticks int64
	for k, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("/proc/stat: %w", err)
		}
		if k != 3 && k != 4 { // idle, iowait
			ticks += n
		}
	}
	c.machine = time.Duration(ticks) * time.Second / agentUserHZ
	if c.etcd, err = agentProcCPU(al.lab.EtcdProc().PID()); err != nil {
		return c, err
	}
	for _, p := range procs {
		cpu, err := agentProcCPU(p.PID())
		if err != nil {
			return c, err
		}
		c.agents += cpu
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return c, err
	}
	c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return c, nil
}

// agentCPUShares says where the machine's CPU time went between c0 and c1,
// wall apart, while n agents started.
func agentCPUShares(c0, c1 agentCPUTimes, wall time.Duration, n int) string {
	sec := func(d time.Duration) float64 { return d.Seconds() }
	machine, etcd, agents, self := c1.machine-c0.machine, c1.etcd-c0.etcd, c1.agents-c0.agents, c1.self-c0.self
	return fmt.Sprintf("CPU-seconds: machine %.2f busy of %.2f (%d CPUs × %.2f s); agents %.2f (%.0f ms each, until the last lease), etcd %.2f (%.1f ms per agent), this benchmark %.2f, the rest (kernel threads, other users) %.2f",
		sec(machine), sec(wall)*float64(runtime.NumCPU()), runtime.NumCPU(), sec(wall),
		sec(agents), sec(agents)*1e3/float64(n), sec(etcd), sec(etcd)*1e3/float64(n), sec(self),
		sec(machine-etcd-agents-self))
}

//go:build unix && !linux

package localcluster

import "syscall"

// sysProcAttr puts a child in its own process group, so that stopping it also
// stops anything it forked. Only Linux has Pdeathsig: elsewhere a test process
// that dies without running its cleanups leaves the children behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

//go:build !linux

package monitoring

import "syscall"

// sysProcAttr gives Prometheus its own process group; only Linux can also
// tie its life to the test process's.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

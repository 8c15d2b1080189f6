package monitoring

import "syscall"

// sysProcAttr gives Prometheus its own process group and has the kernel
// SIGKILL it if the test process dies without running its cleanups (a test
// timeout, a panic): no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

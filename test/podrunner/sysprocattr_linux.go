package podrunner

import "syscall"

// sysProcAttr puts a child in its own process group, so that stopping it also
// stops anything it forked, and has the kernel SIGKILL it when the test process
// dies without running its cleanups (a panic in a goroutine, a test timeout, a
// SIGKILL from the CI runner). Pdeathsig fires when the forking OS thread
// exits; the Go runtime only ends threads whose goroutine exits while locked
// to it with runtime.LockOSThread, which nothing here does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

package podrunner

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// process is one run of a pod's binary.
type process struct {
	cmd       *exec.Cmd
	startedAt time.Time

	done       chan struct{} // closed once the process has exited and been reaped
	finishedAt time.Time     // valid once done is closed
	waitErr    error         // valid once done is closed
}

// startProcess starts the binary for the pod's first container, its output
// appended to <LogDir>/<pod>.log.
func (w *podWorker) startProcess(pod *corev1.Pod) (*process, error) {
	if len(pod.Spec.Containers) == 0 {
		return nil, errors.New("the pod has no containers")
	}
	container := &pod.Spec.Containers[0]
	env, vars := w.environment(pod, container)
	args := make([]string, len(container.Args))
	for i, arg := range container.Args {
		args[i] = expand(arg, vars)
	}

	logPath := filepath.Join(w.r.opts.LogDir, w.name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the log file: %w", err)
	}
	cmd := exec.Command(w.r.opts.Binary, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", w.r.opts.Binary, err)
	}
	p := &process{cmd: cmd, startedAt: time.Now(), done: make(chan struct{})}
	// A marker between the runs of one pod; the process writes to the same
	// file through its own descriptor, both appending.
	_, _ = fmt.Fprintf(logFile, "--- podrunner: started pid %d at %s\n", p.pid(), p.startedAt.Format(time.RFC3339Nano))
	go func() {
		p.waitErr = cmd.Wait()
		p.finishedAt = time.Now()
		_, _ = fmt.Fprintf(logFile, "--- podrunner: pid %d exited (%s) at %s\n", p.pid(), p.exitDescription(),
			p.finishedAt.Format(time.RFC3339Nano))
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal signals the process group: the process and anything it forked.
func (p *process) signal(sig syscall.Signal) error {
	if p.exited() {
		return errors.New("the process has exited")
	}
	if err := syscall.Kill(-p.pid(), sig); err != nil {
		return fmt.Errorf("sending %s to pid %d: %w", sig, p.pid(), err)
	}
	return nil
}

// exitDescription says how the process ended ("exit status 1", "signal:
// killed"); it is only meaningful once done is closed.
func (p *process) exitDescription() string {
	if p.cmd.ProcessState == nil {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// terminated describes the ended process as a container's terminated state,
// with the shell's convention of 128+n for death by signal n.
func (p *process) terminated(id string) *corev1.ContainerStateTerminated {
	state := p.cmd.ProcessState
	t := &corev1.ContainerStateTerminated{
		ExitCode:    int32(state.ExitCode()),
		StartedAt:   metav1.NewTime(p.startedAt),
		FinishedAt:  metav1.NewTime(p.finishedAt),
		ContainerID: id,
		Reason:      "Error",
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Signal = int32(ws.Signal())
		t.ExitCode = 128 + t.Signal
		t.Message = ws.Signal().String()
	}
	if t.ExitCode == 0 {
		t.Reason = "Completed"
	}
	return t
}

// environment returns the process's environment and the variables that
// $(NAME) in args and env values may reference. From weakest to strongest:
// the test process's environment, the container's env, the runner's
// variables, Options.ExtraEnv (exec keeps the last of duplicate names).
func (w *podWorker) environment(pod *corev1.Pod, container *corev1.Container) (env []string, vars map[string]string) {
	runnerVars := [][2]string{
		{EnvPodName, pod.Name},
		{EnvPodNamespace, pod.Namespace},
		{EnvMetricsPort, strconv.Itoa(w.ports.Metrics)},
		{EnvHealthPort, strconv.Itoa(w.ports.Health)},
		{EnvWebhookPort, strconv.Itoa(w.ports.Webhook)},
	}
	if w.r.opts.Kubeconfig != "" {
		runnerVars = append(runnerVars, [2]string{EnvKubeconfig, w.r.opts.Kubeconfig})
	}
	vars = map[string]string{}
	for _, v := range runnerVars {
		vars[v[0]] = v[1]
	}

	env = os.Environ()
	for _, e := range container.Env {
		value, ok := w.envValue(pod, e, vars)
		if !ok {
			continue
		}
		if _, own := vars[e.Name]; !own {
			vars[e.Name] = value
		}
		env = append(env, e.Name+"="+value)
	}
	for _, v := range runnerVars {
		env = append(env, v[0]+"="+v[1])
	}
	for _, e := range w.r.opts.ExtraEnv {
		if name, value, ok := strings.Cut(e, "="); ok {
			vars[name] = value
		}
		env = append(env, e)
	}
	return env, vars
}

// envValue resolves one env entry of the container: a literal value (with
// $(NAME) references expanded), or a fieldRef to what the runner knows. Other
// sources (secrets, config maps, resources) are skipped with a log line.
func (w *podWorker) envValue(pod *corev1.Pod, e corev1.EnvVar, vars map[string]string) (string, bool) {
	if e.ValueFrom == nil {
		return expand(e.Value, vars), true
	}
	if ref := e.ValueFrom.FieldRef; ref != nil {
		switch path := ref.FieldPath; path {
		case "metadata.name":
			return pod.Name, true
		case "metadata.namespace":
			return pod.Namespace, true
		case "metadata.uid":
			return string(pod.UID), true
		case "spec.nodeName":
			return w.r.opts.NodeName, true
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, true
		case "status.podIP", "status.hostIP":
			return localIP, true
		}
	}
	w.log.Info("Skipping an env var whose source the runner cannot resolve", "name", e.Name)
	return "", false
}

// expand replaces $(NAME) in s with the value of NAME from vars, as a kubelet
// expands a container's args: a reference to an unknown name stays as it is,
// and $$ stands for a literal $ (so "$$(NAME)" yields "$(NAME)").
func expand(s string, vars map[string]string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			out = append(out, s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			out = append(out, '$')
			i++
		case '(':
			closing := strings.IndexByte(s[i+2:], ')')
			if closing < 0 {
				return string(append(out, s[i:]...))
			}
			end := i + 2 + closing
			if value, ok := vars[s[i+2:end]]; ok {
				out = append(out, value...)
			} else {
				out = append(out, s[i:end+1]...)
			}
			i = end
		default:
			out = append(out, '$')
		}
	}
	return string(out)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners are
// held until all are chosen so that the kernel cannot hand out one port twice;
// another program could still take one before the pod's process binds it,
// which on loopback is rare enough to accept.
func freePorts(n int) ([]int, error) {
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", localIP+":0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok {
			return nil, errors.New("finding a free port: listener has no TCP address")
		}
		ports = append(ports, addr.Port)
	}
	return ports, nil
}

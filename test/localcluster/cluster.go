package localcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubeshard/kubeshard/internal/testkine"
)

// Cluster is a running control plane. Stop it when done, also when a test
// fails: t.Cleanup(func() { _ = c.Stop() }).
type Cluster struct {
	// Config reaches kube-apiserver as a member of system:masters.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file with the same credentials, for
	// kubectl and for processes under test.
	KubeconfigPath string
	// Dir holds the certificates, etcd's data, the kubeconfig and the logs.
	Dir string

	opts      Options
	removeDir bool
	log       logr.Logger
	apiURL    string

	mu      sync.Mutex // guards procs, kine and stopped
	procs   map[Component]*process
	kine    *testkine.Server // with Options.KineDatabase
	stopped bool
}

// Start starts etcd, kube-apiserver and kube-controller-manager on free
// 127.0.0.1 ports, waits until each is ready and writes the admin kubeconfig.
// ctx bounds the start only: the processes run until Stop. If Start fails it
// stops whatever it started.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts, removeDir, err := applyDefaults(opts)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Dir:       opts.Dir,
		opts:      opts,
		removeDir: removeDir,
		log:       logf.FromContext(ctx).WithName("localcluster"),
		procs:     map[Component]*process{},
	}
	if err := c.start(ctx); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	for _, bin := range []Component{Etcd, APIServer, ControllerManager} {
		if _, err := os.Stat(c.binary(bin)); err != nil {
			return fmt.Errorf("control-plane binary %s not found in %s (run `make k8s-bins`): %w", bin, c.opts.BinDir, err)
		}
	}
	if c.opts.KineDatabase != "" {
		if _, err := os.Stat(c.binary(Kine)); err != nil {
			return fmt.Errorf("kine not found in %s (run `make k8s-bins`): %w", c.opts.BinDir, err)
		}
	}
	pki, err := newPKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		return err
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	etcdClientPort, etcdPeerPort, apiPort, kcmPort := ports[0], ports[1], ports[2], ports[3]
	c.apiURL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := c.writeKubeconfig(pki); err != nil {
		return err
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClientPort)
	if c.opts.KineDatabase != "" {
		kineURL, err := c.startKine(ctx)
		if err != nil {
			return err
		}
		return c.startAPIServerAndKCM(ctx, pki, kineURL, apiPort, kcmPort)
	}
	etcdPeerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	etcd := c.newProcess(Etcd, []string{
		"--name=localcluster",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		// etcd listens for peers even alone; the default port 2380 would
		// collide between clusters.
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=localcluster=" + etcdPeerURL,
		// The data dies with the test; fsync is most of the cost of a write on
		// a shared CI disk.
		"--unsafe-no-fsync=true",
		// The load test keeps 100,000s of objects of several KiB, and their
		// revisions until the API server compacts them (every 5 minutes):
		// more than the default 2 GiB quota, after which etcd refuses writes.
		"--quota-backend-bytes=8589934592",
		"--log-level=warn",
	})
	if err := c.run(ctx, etcd, func(ctx context.Context) error { return checkEtcd(ctx, etcdURL) }); err != nil {
		return err
	}
	return c.startAPIServerAndKCM(ctx, pki, etcdURL, apiPort, kcmPort)
}

// startKine runs kine on Options.KineDatabase; Stop stops it after the API
// server.
func (c *Cluster) startKine(ctx context.Context) (string, error) {
	kine, err := testkine.Start(ctx, testkine.Options{
		Binary: c.binary(Kine), Database: c.opts.KineDatabase,
		LogPath: filepath.Join(c.Dir, string(Kine)+".log"), StartTimeout: c.opts.StartTimeout,
	})
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.kine = kine
	c.mu.Unlock()
	c.log.Info("Process is ready", "component", Kine)
	return kine.URL(), nil
}

// startAPIServerAndKCM starts kube-apiserver on the storage at etcdURL, then
// kube-controller-manager.
func (c *Cluster) startAPIServerAndKCM(ctx context.Context, pki *pki, etcdURL string, apiPort, kcmPort int) error {
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconciler refuses a loopback advertise address. It
		// only maintains the endpoints of the kubernetes Service, which
		// nothing here uses: processes reach the API server via KUBECONFIG.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + pki.path(servingCertFile),
		"--tls-private-key-file=" + pki.path(servingKeyFile),
		"--client-ca-file=" + pki.path(caCertFile),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.path(saKeyFile),
		"--service-account-signing-key-file=" + pki.path(saKeyFile),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// Without a service account controller no namespace has a default
		// ServiceAccount, and the plugin would reject every pod.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		// Unset, a SIGTERM leaves open watches (kube-controller-manager's,
		// any operator's) to the HTTP server's one-minute shutdown timeout,
		// so stopping took until StopTimeout's SIGKILL; set, the server ends
		// them itself and exits in about a second.
		"--shutdown-watch-termination-grace-period=2s",
	}
	if len(c.opts.FeatureGates) > 0 {
		gates := make([]string, 0, len(c.opts.FeatureGates))
		for _, name := range slices.Sorted(maps.Keys(c.opts.FeatureGates)) {
			gates = append(gates, name+"="+strconv.FormatBool(c.opts.FeatureGates[name]))
		}
		apiArgs = append(apiArgs, "--feature-gates="+strings.Join(gates, ","))
	}
	apiArgs = append(apiArgs, c.opts.ExtraAPIServerFlags...)
	api := c.newProcess(APIServer, apiArgs)
	api.env = c.opts.APIServerEnv
	if err := c.run(ctx, api, c.checkAPIServer); err != nil {
		return err
	}

	kcmArgs := []string{
		"--kubeconfig=" + c.KubeconfigPath,
		// Without these kube-controller-manager cannot authenticate requests to
		// its own secure port; /healthz is always allowed either way.
		"--authentication-kubeconfig=" + c.KubeconfigPath,
		"--authorization-kubeconfig=" + c.KubeconfigPath,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		// Where it writes its self-signed serving certificate.
		"--cert-dir=" + filepath.Join(c.Dir, "kube-controller-manager"),
		"--leader-elect=false",
		"--controllers=" + strings.Join(c.opts.Controllers, ","),
		// The controllers act as the kubeconfig's user; per-controller service
		// account tokens would need the token controller and its key.
		"--use-service-account-credentials=false",
	}
	kcmArgs = append(kcmArgs, c.opts.ExtraControllerManagerFlags...)
	kcmURL := "https://127.0.0.1:" + strconv.Itoa(kcmPort) + "/healthz"
	return c.run(ctx, c.newProcess(ControllerManager, kcmArgs), func(ctx context.Context) error {
		return checkKCM(ctx, kcmURL)
	})
}

func (c *Cluster) binary(name Component) string { return filepath.Join(c.opts.BinDir, string(name)) }

func (c *Cluster) newProcess(name Component, args []string) *process {
	return &process{name: name, path: c.binary(name), args: args, logPath: filepath.Join(c.Dir, string(name)+".log")}
}

// run starts p, records it for Stop and waits until check passes.
func (c *Cluster) run(ctx context.Context, p *process, check func(context.Context) error) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("the cluster is stopped")
	}
	if err := p.start(c.log, c.opts.Output); err != nil {
		c.mu.Unlock()
		return err
	}
	c.procs[p.name] = p
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	if err := p.waitReady(ctx, check); err != nil {
		return err
	}
	c.log.Info("Process is ready", "component", p.name, "pid", p.cmd.Process.Pid)
	return nil
}

// writeKubeconfig writes the admin kubeconfig and sets Config from it, so that
// tests and processes under test use exactly the same credentials.
func (c *Cluster) writeKubeconfig(pki *pki) error {
	const name = "localcluster"
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters[name] = &clientcmdapi.Cluster{Server: c.apiURL, CertificateAuthorityData: pki.caPEM}
	kubeconfig.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.adminCertPEM, ClientKeyData: pki.adminKeyPEM}
	kubeconfig.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	kubeconfig.CurrentContext = name
	c.KubeconfigPath = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig, c.KubeconfigPath); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*kubeconfig, nil).ClientConfig()
	if err != nil {
		return fmt.Errorf("building the client configuration: %w", err)
	}
	// client-go's default of 5 QPS would make tests that create many objects
	// measure the client instead of the system (as internal/testenv does).
	cfg.QPS, cfg.Burst = 1000, 2000
	c.Config = cfg
	return nil
}

// APIServerURL returns the https URL of kube-apiserver. It stays the same
// across RestartAPIServer.
func (c *Cluster) APIServerURL() string { return c.apiURL }

// PID returns the process id of a component, or false if it is not running.
// Fault tests use it to signal a component (SIGSTOP etcd, for example).
func (c *Cluster) PID(component Component) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[component]
	if !ok || p.exited() {
		return 0, false
	}
	return p.cmd.Process.Pid, true
}

// RestartAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after
// Options.StopTimeout) and starts it again with the same flags: the same port,
// certificates and etcd, so existing clients reconnect on their own. It
// returns when the new process is ready.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	old, ok := c.procs[APIServer]
	stopped := c.stopped
	c.mu.Unlock()
	if stopped || !ok {
		return errors.New("restarting kube-apiserver: the cluster is not running")
	}
	old.stop(c.log, c.opts.StopTimeout)
	// The port is free from here until the new process binds it; another
	// program taking it meanwhile would make the start fail with "address
	// already in use", which is rare enough on loopback to accept.
	api := c.newProcess(APIServer, old.args)
	api.env = old.env
	if err := c.run(ctx, api, c.checkAPIServer); err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	return nil
}

// Kubectl runs bin/k8s/kubectl with the admin kubeconfig and returns its
// standard output; the error carries its standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.binary("kubectl"), append([]string{"--kubeconfig=" + c.KubeconfigPath}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// Stop stops kube-controller-manager, kube-apiserver and etcd, in that order
// so that no component logs errors about a dependency that went first. Each
// gets SIGTERM and, after Options.StopTimeout, SIGKILL; Stop returns once all
// have exited and removes Dir if Start created it. Calling it again does
// nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	procs, kine := maps.Clone(c.procs), c.kine
	c.mu.Unlock()

	for _, name := range []Component{ControllerManager, APIServer, Etcd} {
		if p, ok := procs[name]; ok {
			p.stop(c.log, c.opts.StopTimeout)
		}
	}
	if kine != nil {
		kine.Stop()
	}
	if c.removeDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			return fmt.Errorf("removing the cluster folder: %w", err)
		}
	}
	return nil
}

// checkEtcd passes once etcd reports itself healthy, which needs a leader.
func checkEtcd(ctx context.Context, url string) error {
	body, err := get(ctx, http.DefaultClient, url+"/health")
	if err != nil {
		return err
	}
	if !strings.Contains(body, `"health":"true"`) {
		return fmt.Errorf("etcd is not healthy: %s", body)
	}
	return nil
}

// checkAPIServer passes once kube-apiserver's /readyz does, which includes its
// post-start hooks (bootstrap RBAC roles, priority levels, the default
// namespaces).
func (c *Cluster) checkAPIServer(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return fmt.Errorf("kube-apiserver is not ready: %w", err)
	}
	return nil
}

// checkKCM passes once kube-controller-manager's /healthz does. It skips
// certificate verification because kube-controller-manager serves a
// self-signed certificate it generates at start, and only its health matters.
func checkKCM(ctx context.Context, url string) error {
	transport := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // see above
	defer transport.CloseIdleConnections()
	_, err := get(ctx, &http.Client{Transport: transport}, url)
	return err
}

// get returns the body of a GET that answers 200.
func get(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}

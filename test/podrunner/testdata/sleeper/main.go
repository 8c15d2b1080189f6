// Command sleeper is the process podrunner's tests run for each pod. It serves
// /readyz on --health-port (the test passes $(HEALTH_PORT), to exercise the
// placeholder) and records what it was started with in <--out>/<POD_NAME>.<pid>.json,
// so the test can check the environment the runner gave it. On SIGTERM it
// writes <POD_NAME>.<pid>.exit next to it and exits 0.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

// Record is what the sleeper writes at start.
type Record struct {
	PodName      string   `json:"podName"`
	PodNamespace string   `json:"podNamespace"`
	PID          int      `json:"pid"`
	Args         []string `json:"args"`
	Kubeconfig   string   `json:"kubeconfig"`
	HealthPort   string   `json:"healthPort"`
	Greeting     string   `json:"greeting"`     // a literal env value of the container
	FieldRefName string   `json:"fieldRefName"` // an env value from a fieldRef
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sleeper:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "folder for the record files")
	healthPort := flag.Int("health-port", 0, "port of /readyz")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	podName := os.Getenv("POD_NAME")
	base := filepath.Join(*out, podName+"."+strconv.Itoa(os.Getpid()))
	record, err := json.Marshal(Record{
		PodName:      podName,
		PodNamespace: os.Getenv("POD_NAMESPACE"),
		PID:          os.Getpid(),
		Args:         os.Args[1:],
		Kubeconfig:   os.Getenv("KUBECONFIG"),
		HealthPort:   os.Getenv("HEALTH_PORT"),
		Greeting:     os.Getenv("GREETING"),
		FieldRefName: os.Getenv("MY_POD_NAME"),
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", record, 0o644); err != nil {
		return err
	}

	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*healthPort)))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := &http.Server{Handler: mux}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Println("sleeper: serving /readyz on", l.Addr())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Println("sleeper: got SIGTERM, exiting")
	return os.WriteFile(base+".exit", nil, 0o644)
}

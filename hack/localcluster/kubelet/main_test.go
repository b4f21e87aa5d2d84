package kubelet

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// helperEnv makes the test binary act as a pod's process (see helperMain).
const helperEnv = "KUBELET_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		helperMain(mode)
		return
	}
	// envtest logs through controller-runtime's logger.
	ctrllog.SetLogger(logr.Discard())
	goleak.VerifyTestMain(m,
		// klog's flush daemon and client-go's watch machinery outlive a
		// test that stopped its informers.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("sigs.k8s.io/controller-runtime/pkg/internal/testing/process.(*State).Start.func1"),
	)
}

// helperMain is a pod process for the tests:
//
//	exit:  exits with $EXIT_CODE.
//	serve: writes its args and environment to $OUT (when set), serves
//	       /readyz (200 while $READY_FILE exists) and /healthz (500 while
//	       $UNHEALTHY_FILE exists) on $POD_IP:$PORT; on SIGTERM prints
//	       "got SIGTERM" and exits 0, unless $IGNORE_TERM is set.
func helperMain(mode string) {
	switch mode {
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("EXIT_CODE"))
		fmt.Println("helper exiting with", code)
		os.Exit(code)
	case "serve":
		if out := os.Getenv("OUT"); out != "" {
			body := strings.Join(os.Args[1:], "\n") + "\n--env--\n" + strings.Join(os.Environ(), "\n") + "\n"
			if err := os.WriteFile(out, []byte(body), 0o644); err != nil {
				fmt.Println(err)
				os.Exit(3)
			}
		}
		terms := make(chan os.Signal, 1)
		signal.Notify(terms, syscall.SIGTERM)
		ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("POD_IP"), os.Getenv("PORT")))
		if err != nil {
			fmt.Println(err)
			os.Exit(4)
		}
		exists := func(env string) bool {
			p := os.Getenv(env)
			if p == "" {
				return false
			}
			_, err := os.Stat(p)
			return err == nil
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !exists("READY_FILE") {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if exists("UNHEALTHY_FILE") {
				w.WriteHeader(http.StatusInternalServerError)
			}
		})
		go func() { _ = http.Serve(ln, mux) }()
		fmt.Println("helper serving on", ln.Addr())
		for range terms {
			fmt.Println("got SIGTERM")
			if os.Getenv("IGNORE_TERM") == "" {
				os.Exit(0)
			}
		}
	}
	os.Exit(2)
}

func fmtSscan(s string, pid *int) (int, error) { return fmt.Sscan(s, pid) }

func processAlive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func itoa(n int) string { return strconv.Itoa(n) }

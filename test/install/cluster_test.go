package install_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// cluster is one envtest control plane (kube-apiserver and etcd built from
// source) with an audit log of every request, and no CRD installed: the
// install under test brings it.
type cluster struct {
	env        *envtest.Environment
	cfg        *rest.Config
	client     client.Client
	clientset  *kubernetes.Clientset
	kubeconfig string // system:masters credentials, for helm and kubectl
	auditLog   string
	dir        string
}

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
`

// startCluster starts a control plane for the current container and stops
// it when the container ends.
func startCluster() *cluster {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	Expect(assets).NotTo(BeEmpty(), "KUBEBUILDER_ASSETS must point at the source-built binaries: run `make test-install`")
	c := &cluster{dir: GinkgoT().TempDir()}
	policy := filepath.Join(c.dir, "audit-policy.yaml")
	Expect(os.WriteFile(policy, []byte(auditPolicy), 0o600)).To(Succeed())
	c.auditLog = filepath.Join(c.dir, "audit.log")

	c.env = &envtest.Environment{BinaryAssetsDirectory: assets}
	c.env.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", c.auditLog).
		Set("audit-log-mode", "blocking")
	var err error
	c.cfg, err = c.env.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(c.env.Stop()).To(Succeed()) })

	c.client, err = client.New(c.cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	c.clientset, err = kubernetes.NewForConfig(c.cfg)
	Expect(err).NotTo(HaveOccurred())

	admin, err := c.env.ControlPlane.AddUser(envtest.User{Name: "installer", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kc, err := admin.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	Expect(os.WriteFile(c.kubeconfig, kc, 0o600)).To(Succeed())
	return c
}

// run runs a command line tool against the cluster and returns its
// combined output.
func (c *cluster) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "HELM_CACHE_HOME="+filepath.Join(c.dir, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(c.dir, "helm-config"), "HELM_DATA_HOME="+filepath.Join(c.dir, "helm-data"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	fmt.Fprintf(GinkgoWriter, "$ %s %s\n%s\n", filepath.Base(name), strings.Join(args, " "), out.String())
	return out.String(), err
}

// serviceAccountKubeconfig writes a kubeconfig holding a token of the
// ServiceAccount, obtained through the TokenRequest API as the kubelet
// would mount it into the operator's pod.
func (c *cluster) serviceAccountKubeconfig(namespace, name string) string {
	tr, err := c.clientset.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: c.cfg.Host, CertificateAuthorityData: c.cfg.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: name, Namespace: namespace}
	kc.CurrentContext = "sa"
	path := filepath.Join(c.dir, namespace+"-"+name+".kubeconfig")
	Expect(clientcmd.WriteToFile(*kc, path)).To(Succeed())
	return path
}

// auditEntry is the part of an audit event the tests read.
type auditEntry struct {
	Stage string `json:"stage"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	Verb      string `json:"verb"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestURI string `json:"requestURI"`
}

// what names the request as "verb group/resource[/subresource]".
func (e auditEntry) what() string {
	if e.ObjectRef == nil {
		return e.Verb + " " + e.RequestURI
	}
	r := e.ObjectRef.Resource
	if e.ObjectRef.Subresource != "" {
		r += "/" + e.ObjectRef.Subresource
	}
	g := e.ObjectRef.APIGroup
	if g == "" {
		g = "core"
	}
	return e.Verb + " " + g + "/" + r
}

// requestsBy returns the completed requests the user made, as the API
// server's audit log recorded them.
func (c *cluster) requestsBy(user string) []auditEntry {
	f, err := os.Open(c.auditLog)
	Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	var out []auditEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEntry
		Expect(json.Unmarshal(sc.Bytes(), &e)).To(Succeed())
		// A watch reports its status when the response starts; every other
		// request when it completes.
		done := e.Stage == "ResponseComplete" || (e.Stage == "ResponseStarted" && e.Verb == "watch")
		if e.User.Username == user && done && e.ResponseStatus != nil {
			out = append(out, e)
		}
	}
	Expect(sc.Err()).NotTo(HaveOccurred())
	return out
}

// expectNothingForbidden fails with the denied requests when the API
// server refused any request of user.
func (c *cluster) expectNothingForbidden(user string) {
	var denied []string
	for _, e := range c.requestsBy(user) {
		if e.ResponseStatus.Code == http.StatusForbidden {
			denied = append(denied, e.what()+" "+e.RequestURI)
		}
	}
	Expect(denied).To(BeEmpty(), "the API server refused these requests of %s: its RBAC is missing a rule", user)
}

// allowedRequests is the set of "verb group/resource" the user made that
// succeeded.
func (c *cluster) allowedRequests(user string) map[string]bool {
	out := map[string]bool{}
	for _, e := range c.requestsBy(user) {
		if e.ResponseStatus.Code < 300 {
			out[e.what()] = true
		}
	}
	return out
}

// operator is a manager process.
type operator struct {
	cmd         *exec.Cmd
	log         string
	metricsAddr string
	probeAddr   string
}

// startOperator runs the manager binary with the Deployment's arguments,
// except that the metrics and probe endpoints bind free loopback ports,
// and with the ServiceAccount's kubeconfig. It stops at the end of the
// current node or container.
func startOperator(kubeconfig string, deploymentArgs []string) *operator {
	op := &operator{metricsAddr: freeAddr(), probeAddr: freeAddr()}
	args := make([]string, 0, len(deploymentArgs))
	for _, a := range deploymentArgs {
		switch {
		case strings.HasPrefix(a, "--metrics-bind-address=") && a != "--metrics-bind-address=0":
			a = "--metrics-bind-address=" + op.metricsAddr
		case strings.HasPrefix(a, "--metrics-bind-address="):
			op.metricsAddr = ""
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = "--health-probe-bind-address=" + op.probeAddr
		}
		args = append(args, a)
	}
	dir := GinkgoT().TempDir()
	op.log = filepath.Join(dir, "manager.log")
	logFile, err := os.Create(op.log)
	Expect(err).NotTo(HaveOccurred())
	op.cmd = exec.Command(managerBin, args...)
	op.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	op.cmd.Stdout, op.cmd.Stderr = logFile, logFile
	op.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(GinkgoWriter, "starting manager %s\n", strings.Join(args, " "))
	Expect(op.cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		op.stop()
		_ = logFile.Close()
		if CurrentSpecReport().Failed() {
			b, _ := os.ReadFile(op.log)
			fmt.Fprintf(GinkgoWriter, "manager log:\n%s\n", b)
		}
	})
	Eventually(func() error { return httpGet("http://" + op.probeAddr + "/readyz") }, 30*time.Second, 200*time.Millisecond).
		Should(Succeed(), "the manager never became ready; see its log")
	return op
}

func (op *operator) stop() {
	if op.cmd.ProcessState != nil {
		return
	}
	_ = op.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- op.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = op.cmd.Process.Kill()
		<-done
	}
}

func (op *operator) logText() string {
	b, err := os.ReadFile(op.log)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

func httpGet(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func httpBody(url string) string {
	resp, err := http.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return b.String()
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

// reportUnusedGrants writes to the test log the granted verbs the operator
// never used while the test drove it: candidates for a smaller role, or
// verbs kept for work not exercised here (deletion, later issues).
func (c *cluster) reportUnusedGrants(user string, rules []rbacv1.PolicyRule) {
	used := c.allowedRequests(user)
	var unused []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			if g == "" {
				g = "core"
			}
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					w := v + " " + g + "/" + res
					if !used[w] && !(v == "list" && used["watch "+g+"/"+res]) {
						unused = append(unused, w)
					}
				}
			}
		}
	}
	fmt.Fprintf(GinkgoWriter, "granted to %s but not used in this test: %s\n", user, strings.Join(unused, ", "))
}

//go:build cluster

package kubernetes

// make test-kubernetes: the kustomization on a real kube-apiserver (no
// kubelet: nothing runs pods), and the real daemon logging in to a real
// Vault through that API server's TokenReview, as docs/operations.md's
// Kubernetes steps do it.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	apiserverBin = flag.String("apiserver", "", "kube-apiserver binary (make test-kubernetes builds it into build/kubernetes)")
	etcdBin      = flag.String("etcd", "etcd", "etcd binary (Debian's etcd-server)")
	kubectlBin   = flag.String("kubectl", "kubectl", "kubectl binary (1.27 or newer: kustomize v5 components)")
	vaultBin     = flag.String("vault", os.Getenv("VAULT_BIN"), "vault binary")
	rotatorBin   = flag.String("binary", "", "codat-rotator binary (make build)")
	crdModule    = flag.String("crd-module", "github.com/prometheus-operator/prometheus-operator@v0.85.0", "Go module whose zip holds the PrometheusRule CRD")
)

// need finds a part of the test, or fails naming what to install: the
// test runs only when asked for (the cluster build tag, make
// test-kubernetes), so it never skips, under CI=true or elsewhere.
func need(t *testing.T, what, bin, install string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if bin == "" || err != nil {
		t.Fatalf("%s not found (%q: %v): %s", what, bin, err, install)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// proc is a started server process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func start(t *testing.T, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Env = env
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("%s log (last 4 KiB):\n%s", name, tail(p.output(), 4096))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// until polls cond every 100ms until it holds, for at most d.
func until(t *testing.T, d time.Duration, what string, p *proc, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if p != nil && p.exited() {
			t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.err, what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(name, b, mode); err != nil {
		t.Fatal(err)
	}
	return name
}

// pki is the cluster's certificates and service-account keys, made here
// as a cluster's installer would.
type pki struct {
	ca, serverCert, serverKey, adminCert, adminKey, saPub, saKey string
	signer                                                       *rsa.PrivateKey
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	p := pki{ca: filepath.Join(dir, "ca.crt")}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-kubernetes-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, tmpl *x509.Certificate) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644),
			writeFile(t, filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	}
	p.serverCert, p.serverKey = leaf("apiserver", 2, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost", "kubernetes.default.svc"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.adminCert, p.adminKey = leaf("admin", 3, &x509.Certificate{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.signer, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&p.signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p.saPub = writeFile(t, filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	p.saKey = writeFile(t, filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(p.signer)}), 0o600)
	return p
}

// resign returns jwt with its claims changed by edit and signed again
// with the cluster's service-account key: a token the API server would
// have minted but for what edit changed.
func (p pki) resign(t *testing.T, jwt string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	cb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.signer, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// kubectl runs the machine's kubectl against the test cluster.
type kubectl struct {
	bin, kubeconfig string
}

func (k kubectl) run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

func (k kubectl) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := k.run(t, "", args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func TestCluster(t *testing.T) {
	apiserver := need(t, "kube-apiserver", *apiserverBin, "run `make test-kubernetes`, which builds it")
	etcd := need(t, "etcd", *etcdBin, "apt-get install etcd-server")
	kctl := need(t, "kubectl", *kubectlBin, "install kubectl 1.27 or newer")
	vaultPath := need(t, "vault", *vaultBin, "set VAULT_BIN or run `make vault`")
	rotator := need(t, "codat-rotator", *rotatorBin, "run `make build`")
	gobin := need(t, "go", "go", "the Go toolchain")

	// Unix socket paths hold about 100 bytes: t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "k8s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sysEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}

	// etcd and the API server, on loopback, with their own CA and keys.
	started := time.Now()
	pk := newPKI(t, dir)
	etcdPort, peerPort := freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	etcdProc := start(t, dir, "etcd", sysEnv, etcd, "--name=test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL, "--initial-cluster=test="+peerURL)
	until(t, 30*time.Second, "etcd", etcdProc, func() bool {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	apiPort := freePort(t)
	apiURL := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	const issuer = "https://kubernetes.default.svc.cluster.local"
	apiProc := start(t, dir, "kube-apiserver", sysEnv, apiserver,
		"--etcd-servers="+etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort), "--tls-cert-file="+pk.serverCert, "--tls-private-key-file="+pk.serverKey,
		"--client-ca-file="+pk.ca, "--service-account-issuer="+issuer,
		"--service-account-key-file="+pk.saPub, "--service-account-signing-key-file="+pk.saKey,
		"--authorization-mode=Node,RBAC", "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none")
	kubeconfig := writeFile(t, filepath.Join(dir, "kubeconfig"), []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: admin, user: {client-certificate: %q, client-key: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, apiURL, pk.ca, pk.adminCert, pk.adminKey)), 0o600)
	k := kubectl{bin: kctl, kubeconfig: kubeconfig}
	until(t, 90*time.Second, "the API server's /readyz", apiProc, func() bool {
		out, err := k.run(t, "", "get", "--raw", "/readyz")
		return err == nil && strings.TrimSpace(out) == "ok"
	})
	t.Logf("etcd and kube-apiserver ready in %s", time.Since(started).Round(time.Millisecond))
	if v := k.must(t, "get", "--raw", "/version"); !strings.Contains(v, `"gitVersion": "v1.34`) {
		t.Errorf("API server version: %s, want v1.34", v)
	}

	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	withRule := withRuleComponent(t, here)

	// docs/operations.md, step 1: the namespace and the first key.
	bootstrapKey := randomKey(t)
	k.must(t, "create", "namespace", namespace)
	k.must(t, "-n", namespace, "create", "secret", "generic", "codat-rotator-bootstrap", "--from-literal=api-key="+bootstrapKey)

	t.Run("apply without the Prometheus Operator", func(t *testing.T) {
		// The rule component needs the CRD: named, apply -k fails, which
		// is why it is optional.
		if out, err := k.run(t, "", "apply", "--validate=strict", "-k", withRule); err == nil || !strings.Contains(out, "PrometheusRule") {
			t.Errorf("apply -k with the rule component, no CRD: %v\n%s; want it refused for the PrometheusRule", err, out)
		}
		out := k.must(t, "apply", "--validate=strict", "-k", here)
		for _, want := range []string{"namespace/codat-rotator", "serviceaccount/codat-rotator", "configmap/codat-rotator-", "service/codat-rotator", "statefulset.apps/codat-rotator"} {
			if !strings.Contains(out, want) {
				t.Errorf("apply -k: no %q in\n%s", want, out)
			}
		}
		// Applied as it is: the server holds what the kustomization says
		// (kubectl diff exits 0 and prints nothing). A second apply -k
		// prints "configured" for the StatefulSet all the same, a
		// client-side apply quirk with volumeClaimTemplates' defaults.
		if out, err := k.run(t, "", "diff", "-k", here); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("kubectl diff -k after apply: %v\n%s", err, out)
		}
	})

	t.Run("restricted Pod Security admits the pod", func(t *testing.T) {
		var sts appsv1.StatefulSet
		if err := json.Unmarshal([]byte(k.must(t, "-n", namespace, "get", "statefulset", name, "-o", "json")), &sts); err != nil {
			t.Fatal(err)
		}
		pod := podOf(sts)
		b, _ := json.Marshal(pod)
		if out, err := k.run(t, string(b), "create", "--dry-run=server", "-f", "-"); err != nil {
			t.Fatalf("the StatefulSet's pod, as its controller would create it: %v\n%s", err, out)
		}
		// The check has teeth: the same pod as root is refused.
		root := int64(0)
		pod.Spec.Containers[0].SecurityContext.RunAsUser = &root
		b, _ = json.Marshal(pod)
		if out, err := k.run(t, string(b), "create", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(out, "restricted") {
			t.Errorf("the pod as root: %v\n%s; want Pod Security restricted to refuse it", err, out)
		}
	})

	t.Run("apply with the Prometheus Operator's CRD", func(t *testing.T) {
		crd := prometheusRuleCRD(t, gobin)
		k.must(t, "apply", "--server-side", "-f", crd)
		k.must(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/prometheusrules.monitoring.coreos.com")
		out := k.must(t, "apply", "--validate=strict", "-k", withRule)
		if !strings.Contains(out, "prometheusrule.monitoring.coreos.com/codat-rotator created") {
			t.Errorf("apply -k with the rule component:\n%s", out)
		}
		k.must(t, "-n", namespace, "get", "prometheusrule", name)
	})

	// The projected token the StatefulSet mounts: its audience and life.
	var sts appsv1.StatefulSet
	if err := json.Unmarshal([]byte(k.must(t, "-n", namespace, "get", "statefulset", name, "-o", "json")), &sts); err != nil {
		t.Fatal(err)
	}
	tokenMount, tokenSrc := vaultToken(t, &sts)
	audience, expiry := tokenSrc.Audience, *tokenSrc.ExpirationSeconds
	mint := func(sa, aud string) string {
		t.Helper()
		return strings.TrimSpace(k.must(t, "-n", namespace, "create", "token", sa, "--audience="+aud, fmt.Sprintf("--duration=%ds", expiry)))
	}

	// Step 2: Vault outside the cluster, with a reviewer service account.
	k.must(t, "apply", "--validate=strict", "-k", filepath.Join(here, "vault-reviewer"))
	reviewerJWT := writeFile(t, filepath.Join(dir, "reviewer.jwt"), []byte(k.must(t, "-n", namespace, "create", "token", "vault-reviewer", "--duration=8760h")), 0o600)
	vaultAddr := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	rootToken := randomKey(t)
	vaultProc := start(t, dir, "vault", sysEnv, vaultPath, "server", "-dev", "-dev-root-token-id="+rootToken,
		"-dev-listen-address="+strings.TrimPrefix(vaultAddr, "http://"), "-dev-no-store-token")
	until(t, 60*time.Second, "vault", vaultProc, func() bool {
		resp, err := http.Get(vaultAddr + "/v1/sys/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	setup := func(extra ...string) {
		t.Helper()
		cmd := exec.Command("sh", filepath.Join(here, "vault-setup.sh"))
		cmd.Env = append([]string{"PATH=" + filepath.Dir(vaultPath) + ":" + os.Getenv("PATH"), "HOME=" + dir,
			"VAULT_ADDR=" + vaultAddr, "VAULT_TOKEN=" + rootToken}, extra...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vault-setup.sh: %v\n%s", err, out)
		}
	}
	outside := []string{"KUBERNETES_HOST=" + apiURL, "KUBERNETES_CA_CERT=" + pk.ca, "TOKEN_REVIEWER_JWT_FILE=" + reviewerJWT}
	setup(outside...)
	setup(outside...) // idempotent
	if got := vaultRead(t, vaultAddr, rootToken, "auth/kubernetes/role/codat-rotator")["audience"]; got != audience {
		t.Errorf("the role's audience: %v, want the projected token's %q", got, audience)
	}

	// The daemon, as the pod runs it: the ConfigMap's config with the
	// pod's paths moved to this host, the token minted as the kubelet
	// mints the projected one, Codat's emulator for api.codat.io.
	emuAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	emu := start(t, dir, "emulator", sysEnv, rotator, "emulator", "--listen", emuAddr, "--initial-key", bootstrapKey)
	until(t, 10*time.Second, "the emulator", emu, func() bool {
		c, err := net.Dial("tcp", emuAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	var cms corev1.ConfigMapList
	if err := json.Unmarshal([]byte(k.must(t, "-n", namespace, "get", "configmap", "-l", "app.kubernetes.io/name=codat-rotator", "-o", "json")), &cms); err != nil || len(cms.Items) != 1 {
		t.Fatalf("the daemon's ConfigMap: %v (%d)", err, len(cms.Items))
	}
	tokenFile := filepath.Join(dir, "token")
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := cms.Items[0].Data[configFile]
	for _, r := range [][2]string{
		{"/var/lib/codat-rotator/state.db", filepath.Join(dir, "state.db")},
		{"/run/codat-rotator/admin.sock", filepath.Join(dir, "admin.sock")},
		{"0.0.0.0:9464", metricsAddr},
		{path.Join(tokenMount.MountPath, tokenSrc.Path), tokenFile},
		{"https://api.codat.io", "http://" + emuAddr},
	} {
		if !strings.Contains(config, r[0]) {
			t.Fatalf("the ConfigMap's config has no %q to move:\n%s", r[0], config)
		}
		config = strings.ReplaceAll(config, r[0], r[1])
	}
	cfgFile := writeFile(t, filepath.Join(dir, "config.yaml"), []byte(config), 0o600)
	goodToken := mint(name, audience)
	writeFile(t, tokenFile, []byte(goodToken), 0o600)
	daemonEnv := append(sysEnv, "VAULT_ADDR="+vaultAddr, "CODAT_BOOTSTRAP_API_KEY="+bootstrapKey)
	daemon := start(t, dir, "codat-rotator", daemonEnv, rotator, "run", "--config", cfgFile)
	readyz := func() (int, string) {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var code int
	var body string
	// Logged in through the TokenReview: Vault answers the readiness
	// checks, which find no key yet.
	until(t, 30*time.Second, "/readyz: no key served yet", daemon, func() bool {
		code, body = readyz()
		return code == 503 && strings.Contains(body, "no key served yet for: production")
	})
	cli := func(token string, args ...string) (string, error) {
		t.Helper()
		cfg := cfgFile
		if token != "" {
			tf := writeFile(t, filepath.Join(dir, "other-token"), []byte(token), 0o600)
			cfg = writeFile(t, filepath.Join(dir, "other-config.yaml"), []byte(strings.ReplaceAll(config, tokenFile, tf)), 0o600)
		}
		cmd := exec.Command(rotator, append(args, "--config", cfg)...)
		cmd.Env = daemonEnv
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The README's rotation through the daemon (kubectl exec … --
	// /codat-rotator rotate, here on the host).
	if out, err := cli("", "rotate", "--target", "production"); err != nil {
		t.Fatalf("rotate through the daemon: %v\n%s", err, out)
	}
	until(t, 30*time.Second, "/readyz 200", daemon, func() bool {
		code, body = readyz()
		return code == 200
	})
	secret := vaultRead(t, vaultAddr, rootToken, "secret/data/codat/production")
	data, _ := secret["data"].(map[string]any)
	apiKey, _ := data["api_key"].(string)
	if apiKey == "" || apiKey == bootstrapKey {
		t.Fatalf("Vault serves %q, want a rotated key", apiKey)
	}
	if out, err := cli("", "check"); err != nil {
		t.Errorf("check with the projected token: %v\n%s", err, out)
	}

	// Three tokens Vault must refuse, each with an error that says why.
	k.must(t, "-n", namespace, "create", "serviceaccount", "other")
	for _, bad := range []struct {
		name, token string
		want        []string
	}{
		{"wrong audience", mint(name, "https://kubernetes.default.svc"), []string{"for audience https://kubernetes.default.svc"}},
		{"expired", pk.resign(t, goodToken, func(c map[string]any) {
			past := time.Now().Add(-20 * time.Minute).Unix()
			c["iat"], c["nbf"], c["exp"] = past-600, past-600, past
		}), []string{"expired at", "system:serviceaccount:codat-rotator:codat-rotator"}},
		{"another service account", mint("other", audience), []string{"system:serviceaccount:codat-rotator:other"}},
	} {
		t.Run("refused: "+bad.name, func(t *testing.T) {
			out, err := cli(bad.token, "check")
			if err == nil {
				t.Fatalf("check succeeded with the %s token:\n%s", bad.name, out)
			}
			for _, want := range append(bad.want, "vault login auth/kubernetes/login: refused") {
				if !strings.Contains(out, want) {
					t.Errorf("check's output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, bad.token) {
				t.Error("check printed the token")
			}
			t.Logf("%s:\n%s", bad.name, out)
		})
	}

	// The daemon reads the file at every login: as the kubelet writes a
	// new token, the next login uses it. Vault's tokens from Kubernetes
	// logins are revoked so the daemon must log in again.
	t.Run("the daemon re-reads the token file", func(t *testing.T) {
		writeFile(t, tokenFile, []byte(mint("other", audience)), 0o600)
		vaultWrite(t, vaultAddr, rootToken, "sys/leases/revoke-prefix/auth/kubernetes", nil)
		out, err := cli("", "rotate", "--target", "production")
		if err == nil || !strings.Contains(out, "system:serviceaccount:codat-rotator:other") {
			t.Errorf("rotate with another account's token in the file: %v\n%s; want the login refused, naming that account", err, out)
		}
		writeFile(t, tokenFile, []byte(mint(name, audience)), 0o600)
		if out, err := cli("", "rotate", "--target", "production"); err != nil {
			t.Errorf("rotate after the kubelet wrote a fresh token: %v\n%s", err, out)
		}
	})

	// vault-setup.sh for a Vault inside the cluster: that Vault reads its
	// own pod's CA and token, here files in a mount namespace of its own
	// (the reviewer's token standing for Vault's service account).
	t.Run("vault inside the cluster", func(t *testing.T) {
		unshare := need(t, "unshare", "unshare", "apt-get install util-linux")
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		const sa = "/run/secrets/kubernetes.io/serviceaccount"
		script := fmt.Sprintf(`set -e
mount -t tmpfs tmpfs /run
mkdir -p %[1]s
cp %[2]q %[1]s/ca.crt
cp %[3]q %[1]s/token
exec %[4]q server -dev -dev-root-token-id=%[5]s -dev-listen-address=%[6]s -dev-no-store-token`, sa, pk.ca, reviewerJWT, vaultPath, rootToken, addr)
		inside := start(t, dir, "vault-in-cluster", sysEnv, unshare, "--mount", "--propagation", "private", "sh", "-c", script)
		until(t, 60*time.Second, "the in-cluster vault", inside, func() bool {
			resp, err := http.Get("http://" + addr + "/v1/sys/health")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		cmd := exec.Command("sh", filepath.Join(here, "vault-setup.sh"))
		cmd.Env = []string{"PATH=" + filepath.Dir(vaultPath) + ":" + os.Getenv("PATH"), "HOME=" + dir,
			"VAULT_ADDR=http://" + addr, "VAULT_TOKEN=" + rootToken, "KUBERNETES_HOST=" + apiURL}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vault-setup.sh with only KUBERNETES_HOST: %v\n%s", err, out)
		}
		b, _ := json.Marshal(map[string]any{"role": "codat-rotator", "jwt": mint(name, audience)})
		resp, err := vaultHTTP.Post("http://"+addr+"/v1/auth/kubernetes/login", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			Auth struct {
				ClientToken string   `json:"client_token"`
				Policies    []string `json:"token_policies"`
			} `json:"auth"`
			Errors []string `json:"errors"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 || doc.Auth.ClientToken == "" {
			t.Fatalf("login through the in-cluster configuration: %d %v %v", resp.StatusCode, doc.Errors, err)
		}
		t.Logf("logged in through the in-cluster configuration, policies %v", doc.Auth.Policies)
	})

	// Stopped as the kubelet stops it; nothing secret in what it logged.
	_ = daemon.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-daemon.done:
		if daemon.err != nil {
			t.Errorf("the daemon after SIGTERM: %v", daemon.err)
		}
	case <-time.After(45 * time.Second): // terminationGracePeriodSeconds
		t.Error("the daemon did not stop within the pod's grace period")
	}
	logs := daemon.output()
	secret = vaultRead(t, vaultAddr, rootToken, "secret/data/codat/production")
	data, _ = secret["data"].(map[string]any)
	latest, _ := data["api_key"].(string)
	for what, s := range map[string]string{"the bootstrap key": bootstrapKey, "the first rotated key": apiKey, "the latest key": latest, "the service-account token": goodToken, "the Vault root token": rootToken} {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("the daemon logged %s", what)
		}
	}
	t.Logf("whole run: %s", time.Since(started).Round(time.Second))
}

// podOf is the pod the StatefulSet controller makes of the template: the
// claim template's volume added, named as the controller names it.
func podOf(sts appsv1.StatefulSet) corev1.Pod {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: sts.Spec.Template.ObjectMeta,
		Spec:       sts.Spec.Template.Spec,
	}
	pod.Name, pod.Namespace = sts.Name+"-0", sts.Namespace
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: pvc.Name,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name + "-" + pod.Name}}})
	}
	return pod
}

// prometheusRuleCRD returns the path of the PrometheusRule CRD in the
// Prometheus Operator's module zip, through the Go module proxy.
func prometheusRuleCRD(t *testing.T, gobin string) string {
	t.Helper()
	out, err := exec.Command(gobin, "mod", "download", "-json", *crdModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", *crdModule, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", *crdModule, err, m.Error)
	}
	crd := filepath.Join(m.Dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_prometheusrules.yaml")
	if _, err := os.Stat(crd); err != nil {
		t.Fatal(err)
	}
	return crd
}

func randomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var vaultHTTP = &http.Client{Timeout: 10 * time.Second}

func vaultRead(t *testing.T, addr, token, p string) map[string]any {
	t.Helper()
	return vaultDo(t, "GET", addr, token, p, nil)
}

func vaultWrite(t *testing.T, addr, token, p string, body map[string]any) map[string]any {
	t.Helper()
	return vaultDo(t, "PUT", addr, token, p, body)
}

func vaultDo(t *testing.T, method, addr, token, p string, body map[string]any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, addr+"/v1/"+p, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := vaultHTTP.Do(req)
	if err != nil {
		t.Fatalf("vault %s %s: %v", method, p, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("vault %s %s: %d %s", method, p, resp.StatusCode, b)
	}
	var doc struct {
		Data map[string]any `json:"data"`
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("vault %s %s: %v", method, p, err)
		}
	}
	return doc.Data
}

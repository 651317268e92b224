// Package kubernetes holds codat-rotator's Kubernetes manifests and their
// tests. It is its own Go module so that the Kubernetes API types stay out
// of the product's go.mod.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// What the manifests promise; docs/operations.md and vault-setup.sh say
// the same.
const (
	namespace   = "codat-rotator"
	name        = "codat-rotator"
	configFile  = "config.yaml"
	configDir   = "/etc/codat-rotator"
	stateDir    = "/var/lib/codat-rotator"
	runDir      = "/run/codat-rotator"
	metricsPort = 9464
	nonroot     = 65532
	vaultRole   = "codat-rotator"
	// The projected token for Vault: its audience (vault-setup.sh's
	// AUDIENCE default) and the longest life it may have.
	vaultAudience  = "vault"
	maxTokenExpiry = 3600
)

// scheme knows the kinds the manifests may hold.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// decoder is the API server's strict decoding: unknown fields (matched
// case-sensitively, unlike encoding/json), duplicate fields, unknown
// kinds and bad values (a quantity, say) are errors.
var decoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeStrict decodes one YAML document into its Kubernetes API type.
func decodeStrict(doc []byte) (runtime.Object, error) {
	obj, _, err := decoder.Decode(doc, nil, nil)
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// unmarshalStrict decodes YAML into v as strictly as decodeStrict does.
// sigs.k8s.io/yaml's UnmarshalStrict matches field names without regard
// to case, so it would let readOnlyRootFileSystem through.
func unmarshalStrict(raw []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// documents splits a YAML stream into its non-empty documents.
func documents(tb testing.TB, raw []byte) [][]byte {
	tb.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			tb.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAll(doc, nil)
}

// loadKustomization decodes kustomization.yaml strictly into kustomize's
// own type.
func loadKustomization(tb testing.TB) *types.Kustomization {
	tb.Helper()
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	var k types.Kustomization
	if err := unmarshalStrict(raw, &k); err != nil {
		tb.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != types.KustomizationKind || k.APIVersion != types.KustomizationVersion {
		tb.Fatalf("kustomization.yaml: got %s %s, want %s %s", k.APIVersion, k.Kind, types.KustomizationVersion, types.KustomizationKind)
	}
	return &k
}

// generatorFiles lists the files the ConfigMap generators read.
func generatorFiles(k *types.Kustomization) []string {
	var files []string
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.FileSources {
			_, file, ok := strings.Cut(f, "=")
			if !ok {
				file = f
			}
			files = append(files, file)
		}
	}
	return files
}

func TestEveryFileIsListed(t *testing.T) {
	k := loadKustomization(t)
	known := append([]string{"kustomization.yaml"}, k.Resources...)
	known = append(known, generatorFiles(k)...)
	for _, f := range known {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("kustomization.yaml names %s: %v", f, err)
		}
	}
	yamls, err := filepath.Glob("*.y*ml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range yamls {
		if !slices.Contains(known, f) {
			t.Errorf("%s is neither a resource nor a generator file of kustomization.yaml: kubectl apply -k would leave it out", f)
		}
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	k := loadKustomization(t)
	if len(k.Resources) == 0 {
		t.Fatal("kustomization.yaml: no resources")
	}
	for _, f := range k.Resources {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs := documents(t, raw)
		if len(docs) == 0 {
			t.Errorf("%s: no document", f)
		}
		for i, doc := range docs {
			if _, err := decodeStrict(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
}

// TestStrictDecodingCatchesTypos makes sure the decoding above would
// catch a misspelt field, a field in the wrong place and a bad value.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	raw, err := os.ReadFile("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(raw); err != nil {
		t.Fatalf("statefulset.yaml as is: %v", err)
	}
	for _, tt := range []struct{ old, new string }{
		{"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		{"      serviceAccountName:", "      serviceAcountName:"},
		{"storage: 1Gi", "storage: 1 gigabyte"},
		{"kind: StatefulSet", "kind: StatefullSet"},
		{"replicas: 1", "replicas: one"},
		{"replicas: 1", "replicas: 1\n  replicas: 2"},
	} {
		if !bytes.Contains(raw, []byte(tt.old)) {
			t.Errorf("statefulset.yaml: no %q to misspell", tt.old)
			continue
		}
		bad := bytes.Replace(raw, []byte(tt.old), []byte(tt.new), 1)
		if _, err := decodeStrict(bad); err == nil {
			t.Errorf("%q → %q: decoded without error", tt.old, tt.new)
		}
	}
}

func TestKustomizationDecodesStrictly(t *testing.T) {
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := unmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml as is: %v", err)
	}
	for _, tt := range []struct{ old, new string }{
		{"configMapGenerator:", "configmapGenerator:"},
		{"newTag:", "tag:"},
		{"namespace: codat-rotator", "namespace: codat-rotator\nnamespace: other"},
	} {
		if !bytes.Contains(raw, []byte(tt.old)) {
			t.Errorf("kustomization.yaml: no %q to misspell", tt.old)
			continue
		}
		bad := bytes.Replace(raw, []byte(tt.old), []byte(tt.new), 1)
		if err := unmarshalStrict(bad, &types.Kustomization{}); err == nil {
			t.Errorf("%q → %q: decoded without error", tt.old, tt.new)
		}
	}
}

// built is what `kubectl apply -k` applies, decoded.
type built struct {
	ns          *corev1.Namespace
	sa          *corev1.ServiceAccount
	cm          *corev1.ConfigMap
	svc         *corev1.Service
	sts         *appsv1.StatefulSet
	rules       *monitoringv1.PrometheusRule
	netpol      *networkingv1.NetworkPolicy
	namespaced  []metav1.Object
	objectCount int
}

// build runs kustomize on deploy/kubernetes as kubectl apply -k does
// and decodes every resource strictly; buildWithRule does the same with
// the prometheus-rule component uncommented.
func build(tb testing.TB) built {
	tb.Helper()
	abs, err := filepath.Abs(".")
	if err != nil {
		tb.Fatal(err)
	}
	return buildDir(tb, abs, false)
}

func buildWithRule(tb testing.TB) built {
	tb.Helper()
	return buildDir(tb, withRuleComponent(tb, "."), true)
}

func buildDir(tb testing.TB, abs string, withRule bool) built {
	tb.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		tb.Fatalf("kustomize build: %v", err)
	}
	var b built
	for _, res := range resMap.Resources() {
		doc, err := res.AsYAML()
		if err != nil {
			tb.Fatal(err)
		}
		obj, err := decodeStrict(doc)
		if err != nil {
			tb.Fatalf("kustomize output %s: %v\n%s", res.CurId(), err, doc)
		}
		b.objectCount++
		switch o := obj.(type) {
		case *corev1.Namespace:
			b.ns = o
		case *corev1.ServiceAccount:
			b.sa, b.namespaced = o, append(b.namespaced, o)
		case *corev1.ConfigMap:
			b.cm, b.namespaced = o, append(b.namespaced, o)
		case *corev1.Service:
			b.svc, b.namespaced = o, append(b.namespaced, o)
		case *appsv1.StatefulSet:
			b.sts, b.namespaced = o, append(b.namespaced, o)
		case *monitoringv1.PrometheusRule:
			b.rules, b.namespaced = o, append(b.namespaced, o)
		case *networkingv1.NetworkPolicy:
			b.netpol, b.namespaced = o, append(b.namespaced, o)
		default:
			tb.Fatalf("kustomize output: unexpected %T", obj)
		}
	}
	switch {
	case withRule && (b.ns == nil || b.sa == nil || b.cm == nil || b.svc == nil || b.sts == nil || b.rules == nil || b.netpol == nil || b.objectCount != 7):
		tb.Fatalf("kustomize output with the rule component: got %d objects, want one each of Namespace, ServiceAccount, ConfigMap, Service, StatefulSet, NetworkPolicy, PrometheusRule", b.objectCount)
	case !withRule && (b.ns == nil || b.sa == nil || b.cm == nil || b.svc == nil || b.sts == nil || b.netpol == nil || b.rules != nil || b.objectCount != 6):
		tb.Fatalf("kustomize output: got %d objects, want one each of Namespace, ServiceAccount, ConfigMap, Service, StatefulSet, NetworkPolicy (and no PrometheusRule: a cluster without the Operator's CRD refuses it)", b.objectCount)
	}
	return b
}

func TestKustomizeBuild(t *testing.T) {
	t.Run("as shipped", func(t *testing.T) { checkBuilt(t, build(t)) })
	t.Run("with the rule component", func(t *testing.T) { checkBuilt(t, buildWithRule(t)) })
}

func checkBuilt(t *testing.T, b built) {
	if b.rules != nil && b.rules.Name != name {
		t.Errorf("PrometheusRule %q, want %q", b.rules.Name, name)
	}
	if b.ns.Name != namespace {
		t.Errorf("namespace: got %q, want %q", b.ns.Name, namespace)
	}
	for _, o := range b.namespaced {
		if o.GetNamespace() != namespace {
			t.Errorf("%s: namespace %q, want %q", o.GetName(), o.GetNamespace(), namespace)
		}
	}
	if b.sa.Name != name || b.svc.Name != name || b.sts.Name != name || b.netpol.Name != name {
		t.Errorf("names: ServiceAccount %q, Service %q, StatefulSet %q, NetworkPolicy %q; want %q", b.sa.Name, b.svc.Name, b.sts.Name, b.netpol.Name, name)
	}
	if !strings.HasPrefix(b.cm.Name, name+"-") {
		t.Errorf("ConfigMap: got %q, want %s-<content hash>", b.cm.Name, name)
	}
}

// container returns the StatefulSet's one container.
func container(tb testing.TB, sts *appsv1.StatefulSet) corev1.Container {
	tb.Helper()
	cs := sts.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		tb.Fatalf("containers: got %d, want 1", len(cs))
	}
	return cs[0]
}

func TestStatefulSet(t *testing.T) {
	b := build(t)
	sts, pod := b.sts, b.sts.Spec.Template.Spec
	c := container(t, sts)

	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("replicas: got %v, want 1: two daemons would rotate the same keys from two state files", deref(sts.Spec.Replicas))
	}
	if sts.Spec.ServiceName != b.svc.Name {
		t.Errorf("serviceName: got %q, want the Service %q", sts.Spec.ServiceName, b.svc.Name)
	}
	if pod.ServiceAccountName != b.sa.Name {
		t.Errorf("serviceAccountName: got %q, want %q", pod.ServiceAccountName, b.sa.Name)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken: got %v, want false: the daemon needs no API-server token, only the projected one for Vault", deref(pod.AutomountServiceAccountToken))
	}
	// The image is the one kustomization.yaml names, at a pinned tag.
	k := loadKustomization(t)
	if len(k.Images) != 1 {
		t.Fatalf("kustomization.yaml images: got %d, want 1", len(k.Images))
	}
	img := k.Images[0]
	if got, want := c.Image, img.NewName+":"+img.NewTag; img.NewTag == "" || got != want {
		t.Errorf("image after kustomize: got %q, want %q (images: %+v)", got, want, img)
	}
	if strings.HasSuffix(c.Image, ":latest") || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s, pull policy %q: want a pinned tag and IfNotPresent", c.Image, c.ImagePullPolicy)
	}
	if got, want := c.Args, []string{"run", "--config", configDir + "/" + configFile}; !slices.Equal(got, want) || len(c.Command) > 0 {
		t.Errorf("command %q args %q: want the image's entrypoint with args %q", c.Command, got, want)
	}

	// Security context: restricted Pod Security Standard.
	psc := pod.SecurityContext
	if psc == nil {
		t.Fatal("pod securityContext: missing")
	}
	csc := c.SecurityContext
	if csc == nil {
		t.Fatal("container securityContext: missing")
	}
	if !isTrue(psc.RunAsNonRoot) || !isTrue(csc.RunAsNonRoot) {
		t.Errorf("runAsNonRoot: pod %v, container %v; want true", deref(psc.RunAsNonRoot), deref(csc.RunAsNonRoot))
	}
	for what, v := range map[string]*int64{"pod runAsUser": psc.RunAsUser, "pod runAsGroup": psc.RunAsGroup, "pod fsGroup": psc.FSGroup, "container runAsUser": csc.RunAsUser} {
		if v == nil || *v != nonroot {
			t.Errorf("%s: got %v, want %d (distroless nonroot)", what, deref(v), nonroot)
		}
	}
	if !isTrue(csc.ReadOnlyRootFilesystem) {
		t.Errorf("readOnlyRootFilesystem: got %v, want true", deref(csc.ReadOnlyRootFilesystem))
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation: got %v, want false", deref(csc.AllowPrivilegeEscalation))
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Error("privileged: true")
	}
	if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities: got %+v, want drop [ALL] and add none", csc.Capabilities)
	}
	for what, sp := range map[string]*corev1.SeccompProfile{"pod": psc.SeccompProfile, "container": csc.SeccompProfile} {
		if sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s seccompProfile: got %+v, want RuntimeDefault", what, sp)
		}
	}

	// Probes on the metrics listener.
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", p.what)
			continue
		}
		if got := p.probe.HTTPGet.Path; got != p.path {
			t.Errorf("%s path: got %q, want %q", p.what, got, p.path)
		}
		if got := resolvePort(t, c, p.probe.HTTPGet.Port); got != metricsPort {
			t.Errorf("%s port: got %d, want %d", p.what, got, metricsPort)
		}
	}

	// Resources: both requests and limits, limits above requests.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim || req.IsZero() || lim.Cmp(req) < 0 {
			t.Errorf("resources %s: requests %v, limits %v; want both, limits ≥ requests", r, req.String(), lim.String())
		}
	}

	// Vault's address, from the environment as the Vault CLI reads it.
	addr := ""
	for _, e := range c.Env {
		if e.Name == "VAULT_ADDR" {
			addr = e.Value
		}
	}
	if !strings.HasPrefix(addr, "https://") {
		t.Errorf("env VAULT_ADDR: got %q, want an https URL", addr)
	}

	// Volumes: the config read-only from the generated ConfigMap, the
	// state on the claim template, the admin socket on an emptyDir; the
	// rest of the filesystem is read-only.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	cfgMount, ok := mounts[configDir]
	if !ok || !cfgMount.ReadOnly {
		t.Errorf("%s: got %+v, want a read-only mount", configDir, cfgMount)
	} else if v := volumes[cfgMount.Name]; v.ConfigMap == nil || v.ConfigMap.Name != b.cm.Name {
		t.Errorf("%s: volume %+v, want the ConfigMap %s", configDir, v, b.cm.Name)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("volumeClaimTemplates: got %d, want 1", len(sts.Spec.VolumeClaimTemplates))
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	if m, ok := mounts[stateDir]; !ok || m.Name != pvc.Name || m.ReadOnly {
		t.Errorf("%s: got %+v, want the claim template %q, writable", stateDir, m, pvc.Name)
	}
	if _, clash := volumes[pvc.Name]; clash {
		t.Errorf("volume %q shadows the claim template of the same name", pvc.Name)
	}
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("claim access modes: got %v, want [ReadWriteOnce]", pvc.Spec.AccessModes)
	}
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.IsZero() {
		t.Error("claim: no storage request")
	}
	if m, ok := mounts[runDir]; !ok || volumes[m.Name].EmptyDir == nil || m.ReadOnly {
		t.Errorf("%s: got %+v, want a writable emptyDir", runDir, m)
	}
	if m, src := vaultToken(t, b.sts); !m.ReadOnly {
		t.Errorf("%s: want the token's mount read-only", m.MountPath)
	} else if src.Audience != vaultAudience || src.ExpirationSeconds == nil || *src.ExpirationSeconds > maxTokenExpiry {
		t.Errorf("projected token: audience %q, expiry %v; want audience %q and an expiry of at most %ds", src.Audience, deref(src.ExpirationSeconds), vaultAudience, maxTokenExpiry)
	}
	for p, m := range mounts {
		if !m.ReadOnly && p != stateDir && p != runDir {
			t.Errorf("%s is writable: the daemon writes only %s and %s", p, stateDir, runDir)
		}
	}
}

// TestConfigMatchesPod reads the daemon's config from the generated
// ConfigMap and checks it against the pod: paths on the right volumes,
// metrics where the probes look, Vault Kubernetes auth with the token the
// pod mounts.
func TestConfigMatchesPod(t *testing.T) {
	b := build(t)
	c := container(t, b.sts)
	raw, ok := b.cm.Data[configFile]
	if !ok {
		t.Fatalf("ConfigMap %s: no %s key (keys: %v)", b.cm.Name, configFile, keys(b.cm.Data))
	}
	var cfg struct {
		StatePath string `json:"state_path"`
		Listen    struct {
			Metrics     string `json:"metrics"`
			AdminSocket string `json:"admin_socket"`
		} `json:"listen"`
		Vault struct {
			Auth struct {
				Method     string `json:"method"`
				Kubernetes struct {
					Role      string `json:"role"`
					TokenFile string `json:"token_file"`
				} `json:"kubernetes"`
			} `json:"auth"`
		} `json:"vault"`
		Targets []struct {
			Name  string `json:"name"`
			Vault struct {
				Mount string `json:"mount"`
				Path  string `json:"path"`
			} `json:"vault"`
		} `json:"targets"`
	}
	// Not strict: this is the product's config, whose own test
	// (cmd/codat-rotator TestKubernetesConfig) validates it in full.
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	if len(cfg.Targets) == 0 {
		t.Fatalf("%s: no targets", configFile)
	}
	for i, tg := range cfg.Targets {
		if tg.Name == "" || tg.Vault.Path == "" {
			t.Errorf("targets[%d]: name %q, vault.path %q: both are required", i, tg.Name, tg.Vault.Path)
		}
	}
	if got := path.Dir(cfg.StatePath); got != stateDir {
		t.Errorf("state_path %s: want it in %s, on the persistent volume", cfg.StatePath, stateDir)
	}
	if got := path.Dir(cfg.Listen.AdminSocket); got != runDir {
		t.Errorf("listen.admin_socket %s: want it in %s, on the emptyDir", cfg.Listen.AdminSocket, runDir)
	}
	host, port, err := net.SplitHostPort(cfg.Listen.Metrics)
	if err != nil || host != "0.0.0.0" || port != strconv.Itoa(metricsPort) {
		t.Errorf("listen.metrics: got %q, want 0.0.0.0:%d so that the probes and Prometheus reach it", cfg.Listen.Metrics, metricsPort)
	}
	if got := resolvePort(t, c, intstr.FromString("metrics")); got != metricsPort {
		t.Errorf("container port metrics: got %d, want %d", got, metricsPort)
	}
	if cfg.Vault.Auth.Method != "kubernetes" || cfg.Vault.Auth.Kubernetes.Role != vaultRole {
		t.Errorf("vault.auth: method %q role %q, want kubernetes and %q", cfg.Vault.Auth.Method, cfg.Vault.Auth.Kubernetes.Role, vaultRole)
	}
	if m, src := vaultToken(t, b.sts); cfg.Vault.Auth.Kubernetes.TokenFile != path.Join(m.MountPath, src.Path) {
		t.Errorf("vault.auth.kubernetes.token_file %s: want the projected token %s", cfg.Vault.Auth.Kubernetes.TokenFile, path.Join(m.MountPath, src.Path))
	}

	// vault-setup.sh creates that role for this ServiceAccount and
	// namespace, with a policy on every target's secret.
	script, err := os.ReadFile("vault-setup.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(script)
	for _, want := range []string{
		"ROLE=${ROLE:-" + vaultRole + "}",
		"SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-" + b.sa.Name + "}",
		"NAMESPACE=${NAMESPACE:-" + b.sa.Namespace + "}",
		"AUDIENCE=${AUDIENCE:-" + vaultAudience + "}",
		`vault write "auth/$AUTH_MOUNT/role/$ROLE"`,
		`bound_service_account_names="$SERVICE_ACCOUNT"`,
		`bound_service_account_namespaces="$NAMESPACE"`,
		`audience="$AUDIENCE"`,
		"policies=codat-rotator",
		"ttl=1h",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("vault-setup.sh: want %q in it", want)
		}
	}
	for _, tg := range cfg.Targets {
		mount := strings.Trim(tg.Vault.Mount, "/")
		if mount == "" {
			mount = "secret"
		}
		for _, p := range []string{mount + "/data/" + tg.Vault.Path, mount + "/metadata/" + tg.Vault.Path} {
			if !strings.Contains(s, `path "`+p+`"`) {
				t.Errorf("vault-setup.sh: no policy on %s (target %s)", p, tg.Name)
			}
		}
	}
}

func TestMetricsService(t *testing.T) {
	b := build(t)
	svc, c := b.svc, container(t, b.sts)
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service ports: got %d, want 1", len(svc.Spec.Ports))
	}
	p := svc.Spec.Ports[0]
	if p.Port != metricsPort || resolvePort(t, c, p.TargetPort) != metricsPort {
		t.Errorf("Service port %d → %s, want %d → the container's %d", p.Port, p.TargetPort.String(), metricsPort, metricsPort)
	}
	labels := b.sts.Spec.Template.Labels
	if len(svc.Spec.Selector) == 0 {
		t.Fatal("Service: no selector")
	}
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod's labels %v", k, v, labels)
		}
	}
	sel := b.sts.Spec.Selector
	if sel == nil {
		t.Fatal("StatefulSet: no selector")
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			t.Errorf("StatefulSet selector %s=%s does not match the pod's labels %v", k, v, labels)
		}
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("clusterIP: got %q, want None (the StatefulSet's governing service)", svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Error("publishNotReadyAddresses: want true, so a pod that cannot reach Vault is still scraped")
	}
}

// Where Prometheus runs, as the NetworkPolicy admits it and docs/metrics.md
// says (kube-prometheus-stack's defaults).
const (
	scrapeNamespace = "monitoring"
	scrapePodLabel  = "app.kubernetes.io/name=prometheus"
)

// TestNetworkPolicy: the pod admits connections on its metrics port
// from Prometheus's pods in the monitoring namespace, and from nothing
// else (issue 23: any pod could hold thousands of connections open).
func TestNetworkPolicy(t *testing.T) {
	b := build(t)
	np, c := b.netpol, container(t, b.sts)
	labels := b.sts.Spec.Template.Labels
	if len(np.Spec.PodSelector.MatchLabels) == 0 || len(np.Spec.PodSelector.MatchExpressions) != 0 {
		t.Fatalf("podSelector: got %+v, want matchLabels of the pod", np.Spec.PodSelector)
	}
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if labels[k] != v {
			t.Errorf("podSelector %s=%s does not match the pod's labels %v", k, v, labels)
		}
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes: got %v, want [Ingress]", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("ingress rules: got %d, want 1 (Prometheus on the metrics port)", len(np.Spec.Ingress))
	}
	rule := np.Spec.Ingress[0]
	if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || resolvePort(t, c, *rule.Ports[0].Port) != metricsPort ||
		rule.Ports[0].Protocol == nil || *rule.Ports[0].Protocol != corev1.ProtocolTCP || rule.Ports[0].EndPort != nil {
		t.Errorf("ingress ports: got %+v, want the one metrics port %d/TCP", rule.Ports, metricsPort)
	}
	if len(rule.From) != 1 {
		t.Fatalf("ingress from: got %d peers, want 1 (an empty list would admit everyone)", len(rule.From))
	}
	peer := rule.From[0]
	wantKey, wantValue, _ := strings.Cut(scrapePodLabel, "=")
	switch {
	case peer.IPBlock != nil:
		t.Errorf("ingress from: an ipBlock %+v, want pods only", peer.IPBlock)
	case peer.NamespaceSelector == nil || len(peer.NamespaceSelector.MatchExpressions) != 0 ||
		!maps.Equal(peer.NamespaceSelector.MatchLabels, map[string]string{"kubernetes.io/metadata.name": scrapeNamespace}):
		t.Errorf("ingress from: namespaceSelector %+v, want the namespace %s alone", peer.NamespaceSelector, scrapeNamespace)
	case peer.PodSelector == nil || len(peer.PodSelector.MatchExpressions) != 0 ||
		!maps.Equal(peer.PodSelector.MatchLabels, map[string]string{wantKey: wantValue}):
		t.Errorf("ingress from: podSelector %+v, want %s alone (in the same peer as the namespace)", peer.PodSelector, scrapePodLabel)
	}
	readme, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"`" + scrapeNamespace + "`", "`" + scrapePodLabel + "`", "networkpolicy.yaml"} {
		if !bytes.Contains(readme, []byte(want)) {
			t.Errorf("docs/metrics.md does not say %s: it must tell where scrapes are admitted from", want)
		}
	}
}

// resolvePort turns a probe's or Service's port into a container port
// number.
func resolvePort(tb testing.TB, c corev1.Container, p intstr.IntOrString) int32 {
	tb.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	tb.Errorf("port %q: no container port of that name", p.StrVal)
	return 0
}

func isTrue(b *bool) bool { return b != nil && *b }

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// vaultToken returns the container's mount of the projected
// service-account token and its source.
func vaultToken(tb testing.TB, sts *appsv1.StatefulSet) (corev1.VolumeMount, corev1.ServiceAccountTokenProjection) {
	tb.Helper()
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken == nil {
				continue
			}
			for _, m := range container(tb, sts).VolumeMounts {
				if m.Name == v.Name {
					return m, *src.ServiceAccountToken
				}
			}
			tb.Fatalf("volume %s (a projected service-account token) is not mounted", v.Name)
		}
	}
	tb.Fatal("no projected service-account token volume: Vault's Kubernetes auth needs one")
	return corev1.VolumeMount{}, corev1.ServiceAccountTokenProjection{}
}

package vaulttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TokenReviewer stands in for the Kubernetes API server's TokenReview
// endpoint, which Vault's Kubernetes auth asks: it authenticates the JWTs
// it knows, as their service account. Point the auth method's
// kubernetes_host at URL (and kubernetes_ca_cert at Certificate()).
type TokenReviewer struct {
	*httptest.Server
	mu      sync.Mutex
	known   map[string]string // JWT → uid
	reviews int
	bearers []string
}

// NewTokenReviewer starts a TokenReviewer over TLS, closed when the test
// ends.
func NewTokenReviewer(tb testing.TB) *TokenReviewer {
	tb.Helper()
	tr := &TokenReviewer{known: map[string]string{}}
	tr.Server = httptest.NewTLSServer(http.HandlerFunc(tr.serve))
	tb.Cleanup(tr.Close)
	return tr
}

// Know makes the reviewer authenticate jwt as the service account with
// the given uid.
func (tr *TokenReviewer) Know(jwt, uid string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.known[jwt] = uid
}

// Count returns how many reviews Vault asked for, and the Authorization
// header of each.
func (tr *TokenReviewer) Count() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.reviews, append([]string(nil), tr.bearers...)
}

func (tr *TokenReviewer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
		return
	}
	var review struct {
		Spec struct {
			Token string `json:"token"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tr.mu.Lock()
	tr.reviews++
	tr.bearers = append(tr.bearers, r.Header.Get("Authorization"))
	uid, ok := tr.known[review.Spec.Token]
	tr.mu.Unlock()
	status := map[string]any{"authenticated": false}
	if ok {
		status = map[string]any{
			"authenticated": true,
			"user": map[string]any{
				"username": "system:serviceaccount:codat-rotator:codat-rotator",
				"uid":      uid,
				"groups":   []string{"system:serviceaccounts", "system:serviceaccounts:codat-rotator", "system:authenticated"},
			},
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"apiVersion": "authentication.k8s.io/v1",
		"kind":       "TokenReview",
		"status":     status,
	})
}

// ServiceAccountJWT returns a legacy Kubernetes service-account token for
// service account name in namespace ns, as an ES256 JWT signed with a
// throwaway key: Vault configured with no pemkeys checks the shape and
// algorithm, and leaves the signature to the TokenReview API.
func ServiceAccountJWT(tb testing.TB, name, ns, uid string) string {
	tb.Helper()
	claims := map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:" + ns + ":" + name,
		"kubernetes.io/serviceaccount/namespace": ns,
		"kubernetes.io/serviceaccount/secret.name":          name + "-token",
		"kubernetes.io/serviceaccount/service-account.name": name,
		"kubernetes.io/serviceaccount/service-account.uid":  uid,
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": "test"})
	c, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig)
}

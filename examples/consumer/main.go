// Command consumer is an example application that calls Codat with the
// key codat-rotator keeps current, through the codatauth package. It
// reads the target's secret from Vault (or a file rendered by Vault Agent
// or mounted from a Kubernetes Secret), lists the Codat companies every
// few seconds, and logs each new key it picks up, never the key itself.
//
//	VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=... \
//	  go run ./examples/consumer -vault-path codat/production
//	go run ./examples/consumer -file /run/app/codat-authorization
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/codatauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	file                                string
	mount, path, auth, authMount        string
	tokenFile, roleIDFile, secretIDFile string
	k8sRole, k8sTokenFile               string
	codatURL                            string
	interval, every                     time.Duration
	count                               int
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.file, "file", "", "read the header from this `file` (Vault Agent, Kubernetes Secret) instead of Vault")
	fs.StringVar(&o.mount, "vault-mount", "secret", "the target's vault.mount: a KV version 2 mount")
	fs.StringVar(&o.path, "vault-path", "", "the target's vault.path, such as codat/production")
	fs.StringVar(&o.auth, "vault-auth", "token", "Vault login: token (VAULT_TOKEN, or -vault-token-file), approle or kubernetes")
	fs.StringVar(&o.authMount, "vault-auth-mount", "", "the auth method's mount (default approle or kubernetes)")
	fs.StringVar(&o.tokenFile, "vault-token-file", "", "token auth: read the token from this `file` (a Vault Agent sink)")
	fs.StringVar(&o.roleIDFile, "approle-role-id-file", "", "approle auth: the role id `file`")
	fs.StringVar(&o.secretIDFile, "approle-secret-id-file", "", "approle auth: the secret id `file`")
	fs.StringVar(&o.k8sRole, "kubernetes-role", "", "kubernetes auth: the Vault role")
	fs.StringVar(&o.k8sTokenFile, "kubernetes-token-file", codatauth.DefaultKubernetesTokenFile, "kubernetes auth: the service-account token `file`")
	fs.StringVar(&o.codatURL, "codat-url", codatauth.DefaultBaseURL, "Codat's API")
	fs.DurationVar(&o.interval, "interval", time.Minute, "how often to read the source: well under the target's grace")
	fs.DurationVar(&o.every, "every", 5*time.Second, "how often to call Codat")
	fs.IntVar(&o.count, "count", 0, "stop after this many calls (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.file == "" && o.path == "" {
		return o, errors.New("-vault-path or -file: say where the key is")
	}
	return o, nil
}

// source builds the codatauth source the options name.
func source(o options) (codatauth.Source, error) {
	if o.file != "" {
		return codatauth.NewFileSource(o.file), nil
	}
	var auth codatauth.VaultAuth
	switch o.auth {
	case "token":
		if o.tokenFile != "" {
			auth = codatauth.TokenAuth{File: o.tokenFile}
		}
	case "approle":
		auth = codatauth.AppRoleAuth{Mount: o.authMount, RoleIDFile: o.roleIDFile, SecretIDFile: o.secretIDFile}
	case "kubernetes":
		auth = codatauth.KubernetesAuth{Mount: o.authMount, Role: o.k8sRole, TokenFile: o.k8sTokenFile}
	default:
		return nil, fmt.Errorf("-vault-auth %q: want token, approle or kubernetes", o.auth)
	}
	// VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, VAULT_NAMESPACE... as the
	// Vault CLI reads them.
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	return codatauth.NewVaultSource(codatauth.VaultConfig{Client: client, Mount: o.mount, Path: o.path, Auth: auth})
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args, out)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(out, nil))
	src, err := source(o)
	if err != nil {
		return err
	}
	tr, err := codatauth.New(ctx, codatauth.Config{
		Source:   src,
		BaseURL:  o.codatURL,
		Interval: o.interval,
		OnRefresh: func(r codatauth.Refresh) {
			switch {
			case r.Err != nil:
				log.Warn("codat key: read failed; keeping the key in use", "source", src.String(), "reason", r.Reason, "error", r.Err)
			case r.Changed:
				log.Info("codat key: now in use", "source", src.String(), "reason", r.Reason, "key_id", r.KeyID)
			}
		},
	})
	if err != nil {
		return err
	}
	defer tr.Close()
	client := tr.Client()
	client.Timeout = 30 * time.Second

	tick := time.NewTicker(o.every)
	defer tick.Stop()
	for n := 1; ; n++ {
		if err := listCompanies(ctx, client, o.codatURL, log); err != nil {
			log.Error("list companies", "error", err)
		}
		if o.count > 0 && n >= o.count {
			break
		}
		select {
		case <-ctx.Done():
			log.Info("stopping", "stats", fmt.Sprintf("%+v", tr.Stats()))
			return nil
		case <-tick.C:
		}
	}
	log.Info("done", "stats", fmt.Sprintf("%+v", tr.Stats()))
	return nil
}

// listCompanies is the application's work: one call to Codat.
func listCompanies(ctx context.Context, client *http.Client, base string, log *slog.Logger) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/companies?page=1&pageSize=100", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("codat answered %s", resp.Status)
	}
	var page struct {
		TotalResults int `json:"totalResults"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return fmt.Errorf("read the companies: %w", err)
	}
	log.Info("listed companies", "status", resp.StatusCode, "total", page.TotalResults)
	return nil
}

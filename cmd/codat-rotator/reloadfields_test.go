package main

import (
	"slices"
	"testing"
)

// TestEveryConfigFieldHasAReloadRule: a top-level config field that a
// reload neither applies nor reports as needing a restart would be
// silently ignored on SIGHUP.
func TestEveryConfigFieldHasAReloadRule(t *testing.T) {
	names := map[string]bool{}
	for _, f := range topLevelFields() {
		names[f.name] = true
		if _, ok := onReload[f.name]; !ok {
			t.Errorf("config field %s has no reload rule: declare it in onReload (applied on reload, or needsRestart)", f.name)
		}
	}
	for name := range onReload {
		if !names[name] {
			t.Errorf("onReload declares %s, which is no field of Config", name)
		}
	}
}

func TestChangedFields(t *testing.T) {
	base := DefaultConfig()
	base.Targets = []TargetConfig{{Name: "a"}}
	for _, tt := range []struct {
		change                 func(*Config)
		wantApply, wantRestart []string
	}{
		{func(*Config) {}, nil, nil},
		{func(c *Config) { c.StatePath = "/elsewhere" }, nil, []string{"state_path"}},
		{func(c *Config) { c.Vault.Auth.Method = "approle" }, nil, []string{"vault"}},
		{func(c *Config) { c.Listen.Metrics = "" }, nil, []string{"listen"}},
		{func(c *Config) { c.CodatRequestsPerMinute = 100 }, []string{"codat_requests_per_minute"}, nil},
		{func(c *Config) {
			c.MaxConcurrentRotations = 2
			c.Targets = []TargetConfig{{Name: "b"}}
			c.Log.Level = "debug"
		}, []string{"targets", "max_concurrent_rotations"}, []string{"log"}},
	} {
		cfg := base
		cfg.Targets = slices.Clone(base.Targets)
		tt.change(&cfg)
		apply, restart := changedFields(base, cfg)
		if !slices.Equal(apply, tt.wantApply) || !slices.Equal(restart, tt.wantRestart) {
			t.Errorf("changedFields: apply %v restart %v, want %v and %v", apply, restart, tt.wantApply, tt.wantRestart)
		}
	}
}

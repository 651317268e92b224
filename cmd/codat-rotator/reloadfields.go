package main

import (
	"encoding/json"
	"reflect"
	"strings"

	"github.com/codat-rotator/codat-rotator/rotation"
)

// reloadRule is what a reload does with one top-level config field.
type reloadRule struct {
	// apply puts the field's new value to work in the running daemon;
	// nil: the field needs a restart, and keeps its running value.
	apply func(c *runCommand, cfg Config) error
}

var needsRestart = reloadRule{}

// onReload declares, once, for every top-level field of Config (by its
// YAML name), whether a reload applies it or it needs a restart
// (docs/design.md#scheduling). TestEveryConfigFieldHasAReloadRule fails
// when a field is in neither.
var onReload = map[string]reloadRule{
	"state_path":                needsRestart,
	"log":                       needsRestart,
	"listen":                    needsRestart,
	"vault":                     needsRestart,
	"targets":                   {apply: (*runCommand).applyTargets},
	"max_concurrent_rotations":  {apply: (*runCommand).applyMaxConcurrent},
	"codat_requests_per_minute": {apply: (*runCommand).applyBudget},
}

// configField is one top-level field of Config.
type configField struct {
	name  string // its YAML name
	index int
}

// topLevelFields lists Config's top-level fields, in order.
func topLevelFields() []configField {
	t := reflect.TypeFor[Config]()
	out := make([]configField, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		out = append(out, configField{name: name, index: i})
	}
	return out
}

// changedFields compares two configs field by field and returns the
// names of the fields that differ, split by their rule; targets, whose
// application may fail, comes first, so that a refused reload has
// applied nothing.
func changedFields(old, cfg Config) (apply, restart []string) {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(cfg)
	for _, f := range topLevelFields() {
		if reflect.DeepEqual(ov.Field(f.index).Interface(), nv.Field(f.index).Interface()) {
			continue
		}
		switch rule := onReload[f.name]; {
		case rule.apply == nil:
			restart = append(restart, f.name)
		case f.name == "targets":
			apply = append([]string{f.name}, apply...)
		default:
			apply = append(apply, f.name)
		}
	}
	return apply, restart
}

// fingerprint names a target's definition, so that a reload leaves an
// unchanged target's loop parked (rotation.Schedule.Fingerprint).
func fingerprint(tc TargetConfig) string {
	b, err := json.Marshal(tc)
	if err != nil {
		return "" // taken as changed
	}
	return string(b)
}

// applyTargets applies new, changed and removed targets. Each changed
// target's loop installs its new Codat client between two runs: a
// rotation in flight, of a changed or removed target, finishes with the
// client it started with. Unchanged targets keep their loop, parked,
// and their client.
func (c *runCommand) applyTargets(cfg Config) error {
	targets, clients, err := c.app.buildTargets(cfg.Targets)
	if err != nil {
		return err
	}
	scheds := schedules(cfg, targets)
	for i := range scheds {
		name, client := scheds[i].Target.Name, clients[scheds[i].Target.Name]
		scheds[i].Activate = func() { c.app.useClient(name, client) }
	}
	if err := c.sched.Apply(scheds); err != nil {
		return err
	}
	c.app.setTargetList(targets)
	c.hooks.Set(webhooks(cfg.Targets))
	c.m.Track(targetNames(cfg.Targets))
	c.cfg.Targets = cfg.Targets
	return nil
}

func (c *runCommand) applyMaxConcurrent(cfg Config) error {
	c.app.engine.SetMaxConcurrent(cfg.MaxConcurrentRotations)
	c.log.Info("max_concurrent_rotations changed", "from", c.cfg.MaxConcurrentRotations, "to", cfg.MaxConcurrentRotations)
	c.cfg.MaxConcurrentRotations = cfg.MaxConcurrentRotations
	return nil
}

func (c *runCommand) applyBudget(cfg Config) error {
	c.app.budget.SetPerMinute(cfg.CodatRequestsPerMinute)
	c.log.Info("codat_requests_per_minute changed", "from", c.cfg.CodatRequestsPerMinute, "to", cfg.CodatRequestsPerMinute)
	c.cfg.CodatRequestsPerMinute = cfg.CodatRequestsPerMinute
	return nil
}

// schedules pairs each target with its schedule from the config.
func schedules(cfg Config, targets []rotation.Target) []rotation.Schedule {
	byName := map[string]TargetConfig{}
	for _, tc := range cfg.Targets {
		byName[tc.Name] = tc
	}
	out := make([]rotation.Schedule, 0, len(targets))
	for _, t := range targets {
		tc := byName[t.Name]
		out = append(out, rotation.Schedule{Target: t, Spec: tc.Schedule, Jitter: tc.Jitter.D(), Fingerprint: fingerprint(tc)})
	}
	return out
}

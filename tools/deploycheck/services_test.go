package deploycheck_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
	"github.com/mailwave/mailwave/services/inbound-dsn/inbounddsn"
	"github.com/mailwave/mailwave/services/planner/planner"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
	"github.com/mailwave/mailwave/services/sender/sender"
)

// serviceDef is one Mailwave service as its main.go wires it: the Config
// type it loads and the Run function it calls. The checks read the
// variables a service understands from its Config type (config.Describe),
// never from a list kept here, so they follow the services as they grow.
type serviceDef struct {
	name      string
	newConfig func() service.Configured
	run       func(ctx context.Context, cfg service.Configured, log *slog.Logger, opts service.Options) error
}

func def[C any, P interface {
	*C
	service.Configured
}](name string, run func(context.Context, C, *slog.Logger, service.Options) error) serviceDef {
	return serviceDef{
		name:      name,
		newConfig: func() service.Configured { return P(new(C)) },
		run: func(ctx context.Context, cfg service.Configured, log *slog.Logger, opts service.Options) error {
			return run(ctx, *cfg.(P), log, opts)
		},
	}
}

var services = []serviceDef{
	def[planner.Config]("planner", planner.Run),
	def[sender.Config]("sender", sender.Run),
	def[inbounddsn.Config]("inbound-dsn", inbounddsn.Run),
	def[fblparser.Config]("fbl-parser", fblparser.Run),
	def[reputation.Config]("reputation-monitor", reputation.Run),
}

func serviceNamed(name string) (serviceDef, bool) {
	for _, s := range services {
		if s.name == name {
			return s, true
		}
	}
	return serviceDef{}, false
}

// variables returns the environment variables cfg reads, from
// config.Describe ("ENV (-flag, default D): usage").
func variables(cfg any) map[string]bool {
	out := map[string]bool{}
	for _, line := range config.Describe(cfg) {
		name, _, _ := strings.Cut(line, ":")
		name, _, _ = strings.Cut(name, " ")
		out[name] = true
	}
	return out
}

// defaults returns each variable's value when nothing sets it, as the
// service logs it (config.Redacted of a configuration loaded from an
// empty environment), formatted as an environment value.
func defaults(s serviceDef) map[string]string {
	cfg := s.newConfig()
	fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_ = config.Load(fs, nil, func(string) string { return "" }, cfg)
	out := map[string]string{}
	for env, v := range config.Redacted(cfg) {
		rv := reflect.ValueOf(v)
		switch {
		case rv.Kind() == reflect.Slice:
			var parts []string
			for i := range rv.Len() {
				parts = append(parts, fmt.Sprint(rv.Index(i).Interface()))
			}
			out[env] = strings.Join(parts, ",")
		case rv.IsZero():
			out[env] = ""
		default:
			out[env] = fmt.Sprint(v)
		}
	}
	return out
}

// awaitedVars are variables a manifest already sets for a feature another
// change adds to a service. The checks accept them while the service does
// not read them, and fail once it does, so the entry is removed then.
var awaitedVars = map[string]string{}

// envVar is one variable a container sets and where its value comes from.
type envVar struct {
	value  string
	origin string
	// secret is set when the value comes from a Secret the render does
	// not hold (the operator creates it): value is then a stand-in.
	secret string
}

// containerEnv resolves the environment Kubernetes gives container c of
// pod: envFrom first, then env, each ConfigMap and Secret looked up in the
// render. Problems (a reference to nothing) are returned, not fatal, so a
// test reports all of them.
func containerEnv(r *rendered, c *corev1.Container) (map[string]envVar, []string) {
	env := map[string]envVar{}
	var problems []string
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, ok := r.configMaps[from.ConfigMapRef.Name]
			if !ok {
				if from.ConfigMapRef.Optional == nil || !*from.ConfigMapRef.Optional {
					problems = append(problems, fmt.Sprintf("envFrom ConfigMap %s, which the render does not hold", from.ConfigMapRef.Name))
				}
				continue
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = envVar{value: v, origin: "ConfigMap " + cm.Name}
			}
		case from.SecretRef != nil:
			sec, ok := r.secrets[from.SecretRef.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("envFrom Secret %s, which the render does not hold: its keys cannot be checked; use env with secretKeyRef", from.SecretRef.Name))
				continue
			}
			for k, v := range secretData(sec) {
				env[from.Prefix+k] = envVar{value: v, origin: "Secret " + sec.Name}
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envVar{value: e.Value, origin: "env"}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := r.configMaps[ref.Name]
			v, has := "", false
			if ok {
				v, has = cm.Data[ref.Key]
			}
			if !has {
				problems = append(problems, fmt.Sprintf("%s: ConfigMap %s has no key %q", e.Name, ref.Name, ref.Key))
				continue
			}
			env[e.Name] = envVar{value: v, origin: "ConfigMap " + ref.Name}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if sec, ok := r.secrets[ref.Name]; ok {
				v, has := secretData(sec)[ref.Key]
				if !has {
					problems = append(problems, fmt.Sprintf("%s: Secret %s has no key %q", e.Name, ref.Name, ref.Key))
					continue
				}
				env[e.Name] = envVar{value: v, origin: "Secret " + ref.Name}
				continue
			}
			env[e.Name] = envVar{origin: "Secret " + ref.Name, secret: ref.Name}
		default:
			// Downward API: the pod's own fields.
			env[e.Name] = envVar{value: "from-the-pod", origin: "downward API"}
		}
	}
	return env, problems
}

func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	maps.Copy(out, s.StringData)
	return out
}

// standIn is the value a check uses for a variable whose Secret the
// operator creates: the variable's default when it has one (the Secret
// replaces it with a value of the same kind), else a string long enough
// for any key.
func standIn(defaults map[string]string, name, secret string) string {
	if d := defaults[name]; d != "" {
		return d
	}
	return "stand-in-for-secret-" + secret
}

// materialize writes the files of the ConfigMap and Secret volumes of pod
// that the render holds under dir, and returns a function that maps a
// path inside the container to the written file ("" when the path is not
// in such a volume). A path into a volume the render cannot fill (an
// operator's Secret) maps to itself.
func materialize(t reporter, r *rendered, pod *corev1.PodSpec, c *corev1.Container, dir string) func(string) (string, error) {
	t.Helper()
	type mount struct {
		path  string
		files map[string]string // relative path → content; nil when unknown
	}
	var mounts []mount
	for _, vm := range c.VolumeMounts {
		var vol *corev1.Volume
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == vm.Name {
				vol = &pod.Volumes[i]
			}
		}
		if vol == nil {
			continue
		}
		var data map[string]string
		var items []corev1.KeyToPath
		switch {
		case vol.ConfigMap != nil:
			if cm, ok := r.configMaps[vol.ConfigMap.Name]; ok {
				data, items = cm.Data, vol.ConfigMap.Items
			}
		case vol.Secret != nil:
			if s, ok := r.secrets[vol.Secret.SecretName]; ok {
				data, items = secretData(s), vol.Secret.Items
			}
		default:
			continue
		}
		files := map[string]string(nil)
		if data != nil {
			files = map[string]string{}
			if len(items) == 0 {
				maps.Copy(files, data)
			}
			for _, it := range items {
				files[it.Path] = data[it.Key]
			}
			if vm.SubPath != "" {
				files = map[string]string{"": files[vm.SubPath]}
			}
		}
		mounts = append(mounts, mount{path: vm.MountPath, files: files})
	}
	return func(p string) (string, error) {
		for i, m := range mounts {
			rel, err := filepath.Rel(m.path, p)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			if rel == "." {
				rel = ""
			}
			if m.files == nil {
				return p, nil
			}
			content, ok := m.files[rel]
			if !ok {
				return "", fmt.Errorf("%s is in the volume mounted at %s, which holds no such file (it has %v)", p, m.path, slices.Sorted(maps.Keys(m.files)))
			}
			out := filepath.Join(dir, strconv.Itoa(i), rel)
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return "", err
			}
			if err := os.WriteFile(out, []byte(content), 0o600); err != nil {
				return "", err
			}
			return out, nil
		}
		return "", nil
	}
}

// deployedConfig is a service's configuration as a container's
// environment gives it.
type deployedConfig struct {
	cfg service.Configured
	env map[string]envVar
	// listens maps each *_ADDR variable (a listen address, by the
	// services' naming) to its port.
	listens map[string]int
}

// loadDeployed resolves the environment of container c, checks that the
// service reads every variable set, and loads and validates the
// configuration exactly as the service does at start (a required
// variable that is not set fails here). Paths into ConfigMap volumes are
// replaced by the files' contents written under a temporary folder, so
// the service's own validation reads the rules files shipped in the
// ConfigMaps. override, when set, replaces values before loading.
func loadDeployed(t reporter, r *rendered, s serviceDef, pod *corev1.PodSpec, c *corev1.Container, override func(name, value string) string) (*deployedConfig, []string) {
	t.Helper()
	env, problems := containerEnv(r, c)
	known := variables(s.newConfig())
	def := defaults(s)
	for name, awaited := range awaitedVars {
		if awaited == s.name && known[name] {
			problems = append(problems, fmt.Sprintf("the %s reads %s now: remove it from awaitedVars", s.name, name))
		}
	}
	resolve := materialize(t, r, pod, c, t.TempDir())
	values := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		v := env[name]
		if !known[name] {
			if awaitedVars[name] == s.name {
				continue
			}
			problems = append(problems, fmt.Sprintf("sets %s (from %s), which the %s does not read", name, v.origin, s.name))
			continue
		}
		value := v.value
		if v.secret != "" {
			value = standIn(def, name, v.secret)
		}
		if strings.HasPrefix(value, "/") {
			file, err := resolve(value)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			if file != "" {
				value = file
			}
		}
		if override != nil {
			value = override(name, value)
		}
		values[name] = value
	}
	if override != nil {
		// Listen addresses the manifest leaves to their defaults are the
		// test's too.
		for name := range known {
			if _, set := values[name]; !set && strings.HasSuffix(name, "_ADDR") {
				values[name] = override(name, def[name])
			}
		}
	}
	dc := &deployedConfig{cfg: s.newConfig(), env: env, listens: map[string]int{}}
	if err := service.LoadConfig(s.name, nil, func(k string) string { return values[k] }, dc.cfg); err != nil {
		problems = append(problems, fmt.Sprintf("the %s refuses this environment: %v", s.name, err))
		return dc, problems
	}
	for name, v := range config.Redacted(dc.cfg) {
		addr, ok := v.(string)
		if !strings.HasSuffix(name, "_ADDR") || !ok || addr == "" {
			continue
		}
		if override != nil {
			// The overridden value is the test's own; the port that
			// counts is the manifest's, or the default.
			addr = def[name]
			if e, ok := env[name]; ok {
				addr = e.value
			}
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s=%q is not host:port", name, addr))
			continue
		}
		n, _ := strconv.Atoi(port)
		dc.listens[name] = n
	}
	return dc, problems
}

// drainTimeout is the service's MW_DRAIN_TIMEOUT.
func (d *deployedConfig) drainTimeout() time.Duration {
	v, _ := config.Redacted(d.cfg)["MW_DRAIN_TIMEOUT"].(string)
	dur, _ := time.ParseDuration(v)
	return dur
}

func (d *deployedConfig) value(name string) string {
	return fmt.Sprint(config.Redacted(d.cfg)[name])
}

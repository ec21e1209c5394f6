// Package config loads a service's typed configuration from environment
// variables with command-line flag overrides. Fields are described by
// struct tags:
//
//	NATSURL string `env:"NATS_URL" flag:"nats-url" default:"nats://127.0.0.1:4222" usage:"NATS server URL"`
//	Token   string `env:"MW_TOKEN" secret:"true"`
//
// Supported field types: string, bool, int, int64, float64, time.Duration,
// []string (comma separated) and nested structs (whose fields are loaded
// the same way). A value that does not parse stops loading with an error
// naming the variable, so a service refuses to start with a bad setting.
package config

import (
	"errors"
	"flag"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid wraps every configuration error; the message names the field.
var ErrInvalid = errors.New("config: invalid")

// Load fills dst (a pointer to a struct) from defaults, then getenv, then
// the flags in args, in that order of precedence (flags win). fs receives
// one flag per field that has a flag tag. Errors wrap ErrInvalid, or are
// flag.ErrHelp when -h was given.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("%w: destination must be a pointer to a struct", ErrInvalid)
	}
	fields := collect(v.Elem())
	for _, f := range fields {
		if d, ok := f.tag.Lookup("default"); ok {
			if err := set(f.value, d); err != nil {
				return fmt.Errorf("%w: default of %s: %w", ErrInvalid, f.name(), err)
			}
		}
		if env := f.tag.Get("env"); env != "" {
			if raw := getenv(env); raw != "" {
				if err := set(f.value, raw); err != nil {
					return fmt.Errorf("%w: %s=%q: %w", ErrInvalid, env, raw, err)
				}
			}
		}
		if name := f.tag.Get("flag"); name != "" {
			fs.Var(&flagValue{f: f}, name, usage(f))
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Errorf returns a validation error naming the field by its environment
// variable, for a service's Validate method.
func Errorf(env, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, env, fmt.Sprintf(format, args...))
}

// Redacted returns the configuration as a map from environment variable to
// value, suitable for logging: fields tagged secret are shown as
// "[redacted]" when set, and credentials in URLs are masked.
func Redacted(src any) map[string]any {
	v := reflect.ValueOf(src)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	out := map[string]any{}
	for _, f := range collect(v) {
		key := f.tag.Get("env")
		if key == "" {
			key = f.path
		}
		val := f.value.Interface()
		switch {
		case f.tag.Get("secret") == "true":
			if !f.value.IsZero() {
				val = "[redacted]"
			}
		case f.value.Kind() == reflect.String:
			val = maskURL(f.value.String())
		}
		if d, ok := val.(time.Duration); ok {
			val = d.String()
		}
		out[key] = val
	}
	return out
}

// Describe lists the configuration fields of src as lines
// "ENV (-flag, default D): usage", sorted, for documentation and -help.
func Describe(src any) []string {
	v := reflect.ValueOf(src)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var lines []string
	for _, f := range collect(v) {
		env := f.tag.Get("env")
		if env == "" {
			continue
		}
		line := env
		var extra []string
		if fl := f.tag.Get("flag"); fl != "" {
			extra = append(extra, "-"+fl)
		}
		if d, ok := f.tag.Lookup("default"); ok && d != "" {
			extra = append(extra, "default "+d)
		}
		if len(extra) > 0 {
			line += " (" + strings.Join(extra, ", ") + ")"
		}
		line += ": " + f.tag.Get("usage")
		lines = append(lines, line)
	}
	sort.Strings(lines)
	return lines
}

func maskURL(s string) string {
	at := strings.Index(s, "@")
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return s
	}
	userinfo := s[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return s[:scheme+3] + userinfo[:i] + ":[redacted]" + s[at:]
	}
	return s
}

type field struct {
	path  string
	tag   reflect.StructTag
	value reflect.Value
}

func (f field) name() string {
	if env := f.tag.Get("env"); env != "" {
		return env
	}
	return f.path
}

func collect(v reflect.Value) []field {
	var out []field
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		isStruct := sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeOf(time.Time{})
		// An embedded struct's exported fields are promoted even when the
		// struct type itself is unexported.
		if !sf.IsExported() && !(sf.Anonymous && isStruct) {
			continue
		}
		fv := v.Field(i)
		if isStruct {
			for _, inner := range collect(fv) {
				inner.path = sf.Name + "." + inner.path
				out = append(out, inner)
			}
			continue
		}
		if sf.Tag.Get("env") == "" && sf.Tag.Get("flag") == "" {
			continue
		}
		out = append(out, field{path: sf.Name, tag: sf.Tag, value: fv})
	}
	return out
}

func usage(f field) string {
	u := f.tag.Get("usage")
	if env := f.tag.Get("env"); env != "" {
		u += " (env " + env + ")"
	}
	return u
}

var durationType = reflect.TypeOf(time.Duration(0))

func set(v reflect.Value, raw string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 30s, 5m)")
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not a boolean (true or false)")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		v.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("not a number")
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", v.Type())
		}
		var parts []string
		for p := range strings.SplitSeq(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

type flagValue struct{ f field }

func (fv *flagValue) String() string {
	if !fv.f.value.IsValid() {
		return ""
	}
	return fmt.Sprint(fv.f.value.Interface())
}

func (fv *flagValue) Set(raw string) error {
	if err := set(fv.f.value, raw); err != nil {
		return fmt.Errorf("%s: %w", fv.f.name(), err)
	}
	return nil
}

func (fv *flagValue) IsBoolFlag() bool { return fv.f.value.Kind() == reflect.Bool }

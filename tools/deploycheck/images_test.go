package deploycheck_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// skaffoldConfig is the part of the skaffold schema (v4beta11) that
// skaffold.yaml uses; decoding refuses any other field, so a misspelt one
// fails here rather than being ignored.
type skaffoldConfig struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Build       skaffoldBuild    `yaml:"build"`
	Manifests   skaffoldManifest `yaml:"manifests"`
	Deploy      skaffoldDeploy   `yaml:"deploy"`
	PortForward []struct {
		ResourceType string `yaml:"resourceType"`
		ResourceName string `yaml:"resourceName"`
		Namespace    string `yaml:"namespace"`
		Port         int    `yaml:"port"`
		LocalPort    int    `yaml:"localPort"`
	} `yaml:"portForward"`
	Profiles []struct {
		Name       string `yaml:"name"`
		Activation []struct {
			Command     string `yaml:"command"`
			Env         string `yaml:"env"`
			KubeContext string `yaml:"kubeContext"`
		} `yaml:"activation"`
		Build     skaffoldBuild    `yaml:"build"`
		Manifests skaffoldManifest `yaml:"manifests"`
		Deploy    skaffoldDeploy   `yaml:"deploy"`
	} `yaml:"profiles"`
}

type skaffoldBuild struct {
	TagPolicy struct {
		GitCommit *struct {
			Variant string `yaml:"variant"`
		} `yaml:"gitCommit"`
	} `yaml:"tagPolicy"`
	Local struct {
		Push        *bool `yaml:"push"`
		UseBuildkit *bool `yaml:"useBuildkit"`
		Concurrency *int  `yaml:"concurrency"`
	} `yaml:"local"`
	Artifacts []struct {
		Image   string `yaml:"image"`
		Context string `yaml:"context"`
		Docker  struct {
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"docker"`
	} `yaml:"artifacts"`
}

type skaffoldManifest struct {
	Kustomize struct {
		Paths []string `yaml:"paths"`
	} `yaml:"kustomize"`
}

type skaffoldDeploy struct {
	Kubectl                    *struct{} `yaml:"kubectl"`
	StatusCheckDeadlineSeconds int       `yaml:"statusCheckDeadlineSeconds"`
}

func readSkaffold(t *testing.T) *skaffoldConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "skaffold.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c skaffoldConfig
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("skaffold.yaml: %v", err)
	}
	return &c
}

// artifacts maps each service to its skaffold image, from the Dockerfile
// each artifact builds.
func artifacts(t *testing.T, c *skaffoldConfig) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range c.Build.Artifacts {
		if a.Context != "." {
			t.Errorf("skaffold artifact %s builds from %q; from the repository root (\".\") the go.work workspace is visible", a.Image, a.Context)
		}
		dir, file := filepath.Split(a.Docker.Dockerfile)
		svc := filepath.Base(dir)
		if file != "Dockerfile" || filepath.Clean(dir) != filepath.Join("services", svc) {
			t.Errorf("skaffold artifact %s builds %s; want services/<service>/Dockerfile", a.Image, a.Docker.Dockerfile)
			continue
		}
		if _, ok := serviceNamed(svc); !ok {
			t.Errorf("skaffold artifact %s builds %s, not a service", a.Image, svc)
		}
		if prev, ok := out[svc]; ok {
			t.Errorf("skaffold builds %s twice (%s, %s)", svc, prev, a.Image)
		}
		out[svc] = a.Image
	}
	for _, s := range services {
		if _, ok := out[s.name]; !ok {
			t.Errorf("skaffold builds no image of the %s", s.name)
		}
	}
	return out
}

// TestImagesAreSkaffoldArtifacts: every service's container runs the image
// skaffold builds for it (untagged: skaffold sets the tag), every other
// image is pinned to a version, and the profiles deploy the overlays.
func TestImagesAreSkaffoldArtifacts(t *testing.T) {
	c := readSkaffold(t)
	if c.APIVersion != "skaffold/v4beta11" || c.Kind != "Config" {
		t.Errorf("skaffold.yaml is %s %s; the checks know skaffold/v4beta11 Config", c.APIVersion, c.Kind)
	}
	images := artifacts(t, c)
	byImage := map[string]string{}
	for svc, img := range images {
		byImage[img] = svc
	}
	for _, v := range variants {
		r := render(t, v)
		for _, w := range r.workloads() {
			for _, ct := range append(slices.Clone(w.pod.InitContainers), w.pod.Containers...) {
				if svc, ok := byImage[ct.Image]; ok {
					if svc != w.name || ct.Name != svc {
						t.Errorf("%s: %s container %s runs the %s image", v.name, w, ct.Name, svc)
					}
					continue
				}
				if _, ok := serviceNamed(w.name); ok && ct.Name == w.name {
					t.Errorf("%s: %s runs %s, not the skaffold artifact %s", v.name, w, ct.Image, images[w.name])
					continue
				}
				name, tag, hasTag := strings.Cut(ct.Image[strings.LastIndex(ct.Image, "/")+1:], ":")
				if !strings.Contains(ct.Image, "@sha256:") && (!hasTag || tag == "latest" || !regexp.MustCompile(`^v?[0-9]`).MatchString(tag)) {
					t.Errorf("%s: %s container %s runs %s (%s): pin third-party images to a version", v.name, w, ct.Name, ct.Image, name)
				}
			}
		}
	}

	profiles := map[string][]string{}
	for _, p := range c.Profiles {
		profiles[p.Name] = p.Manifests.Kustomize.Paths
	}
	for _, overlay := range []string{"dev", "prod"} {
		want := []string{"deploy/k8s/overlays/" + overlay}
		if !slices.Equal(profiles[overlay], want) {
			t.Errorf("skaffold profile %s deploys %v, want %v", overlay, profiles[overlay], want)
		}
	}
	if !slices.Equal(c.Manifests.Kustomize.Paths, []string{"deploy/k8s/overlays/dev"}) {
		t.Errorf("skaffold's default manifests are %v; skaffold dev deploys the dev overlay", c.Manifests.Kustomize.Paths)
	}
	dev := render(t, variant{name: "dev", dir: "deploy/k8s/overlays/dev"})
	for _, pf := range c.PortForward {
		found := false
		for _, s := range dev.services {
			if s.Name == pf.ResourceName && s.Namespace == pf.Namespace {
				for _, p := range s.Spec.Ports {
					found = found || int(p.Port) == pf.Port
				}
			}
		}
		if pf.ResourceType != "service" || !found {
			t.Errorf("skaffold forwards %s %s/%s:%d, which the dev overlay does not serve", pf.ResourceType, pf.Namespace, pf.ResourceName, pf.Port)
		}
	}
}

// dockerfile is a parsed Dockerfile: its instructions, continuation lines
// joined, comments dropped.
type instruction struct{ op, args string }

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for line := range strings.SplitSeq(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(trimmed)
		op, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(op), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// goBuild is the go build command of a Dockerfile's RUN instruction.
type goBuild struct {
	args   []string // after "go build", the -o value and package included
	output string
	pkg    string
}

// words splits s as a shell does: blanks separate words, quotes group
// and are removed.
func words(s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// TestDockerfiles: each image builds a static binary (CGO_ENABLED=0) of
// its service from a copy of the whole workspace, runs it on a
// distroless or scratch base as the non-root user the Deployments run as,
// and the Dockerfile's go build compiles.
func TestDockerfiles(t *testing.T) {
	wf := readWork(t)
	dev := render(t, variant{name: "dev", dir: "deploy/k8s/overlays/dev"})
	var builds []goBuild
	for _, s := range services {
		t.Run(s.name, func(t *testing.T) {
			ins := parseDockerfile(t, filepath.Join(root, "services", s.name, "Dockerfile"))
			var froms []instruction
			var copies []string
			var build *goBuild
			var user, entrypoint string
			for _, in := range ins {
				switch in.op {
				case "FROM":
					froms = append(froms, in)
					copies = nil
					user = ""
				case "COPY":
					copies = append(copies, in.args)
					if len(froms) == 1 {
						w := words(in.args)
						for _, src := range w[:len(w)-1] {
							checkWorkspaceCopy(t, src)
						}
					}
				case "USER":
					user = in.args
				case "ENTRYPOINT":
					entrypoint = in.args
				case "RUN":
					if b := parseGoBuild(t, in.args); b != nil {
						build = b
					}
				}
			}
			if len(froms) != 2 {
				t.Fatalf("%d stages; want a build stage and the final image", len(froms))
			}
			builder := words(froms[0].args)
			if len(builder) < 3 || !strings.HasPrefix(builder[len(builder)-3], "golang:") || builder[len(builder)-2] != "AS" {
				t.Errorf("build stage %q: want FROM golang:<version> AS <name>", froms[0].args)
			} else {
				checkGoVersion(t, strings.TrimPrefix(builder[len(builder)-3], "golang:"), wf)
			}
			base := froms[1].args
			if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
				t.Errorf("final image on %s; want distroless/static or scratch", base)
			}
			for _, use := range wf.use {
				dir := strings.TrimPrefix(use, "./")
				found := false
				for _, in := range ins {
					if in.op == "COPY" && !strings.HasPrefix(in.args, "--from") {
						for _, src := range words(in.args) {
							src = strings.TrimSuffix(src, "/")
							found = found || src == dir || src == dir+"/go.mod" || strings.HasPrefix(dir, src+"/")
						}
					}
				}
				if !found {
					t.Errorf("the build copies nothing of the workspace module %s (go.work uses it)", dir)
				}
			}
			if build == nil {
				t.Fatal("no CGO_ENABLED=0 go build")
			}
			if build.pkg != "./services/"+s.name {
				t.Errorf("builds %s, want ./services/%s", build.pkg, s.name)
			}
			bin := "/" + s.name
			wantCopy := fmt.Sprintf("--from=%s %s %s", words(froms[0].args)[len(words(froms[0].args))-1], build.output, bin)
			if !slices.Contains(copies, wantCopy) {
				t.Errorf("final stage copies %v; want COPY %s", copies, wantCopy)
			}
			if entrypoint != fmt.Sprintf(`["%s"]`, bin) {
				t.Errorf("ENTRYPOINT %s; want [\"%s\"]", entrypoint, bin)
			}
			uid, _, _ := strings.Cut(user, ":")
			n, err := strconv.Atoi(uid)
			if err != nil || n == 0 {
				t.Errorf("USER %q: want a numeric non-root user (runAsNonRoot needs a number)", user)
			}
			if base == "gcr.io/distroless/static-debian12:nonroot" && n != 65532 {
				t.Errorf("USER %d on distroless nonroot, whose user is 65532", n)
			}
			if w, ok := dev.deployment(s.name); ok && w.pod.SecurityContext != nil && w.pod.SecurityContext.RunAsUser != nil && int(*w.pod.SecurityContext.RunAsUser) != n {
				t.Errorf("the image runs as %d, the Deployment as %d", n, *w.pod.SecurityContext.RunAsUser)
			}
			builds = append(builds, *build)
		})
	}
	if t.Failed() {
		return
	}
	// Every package the images compile loads with the Dockerfiles' build
	// flags and CGO_ENABLED=0 (a package that needs cgo has no files
	// left then), and each is a command.
	for _, b := range builds {
		var flags []string
		for i := 0; i < len(b.args)-1; i++ {
			if b.args[i] == "-o" {
				i++
				continue
			}
			flags = append(flags, b.args[i])
		}
		args := append([]string{"list", "-e", "-deps", "-f",
			`{{if .Error}}{{.ImportPath}}: {{.Error}}{{"\n"}}{{end}}{{range .DepsErrors}}{{.}}{{"\n"}}{{end}}{{if .CgoFiles}}{{.ImportPath}} needs cgo{{"\n"}}{{end}}`},
			flags...)
		args = append(args, b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		cmd = exec.Command("go", "list", "-f", "{{.Name}}", b.pkg)
		cmd.Dir = root
		if name, err := cmd.Output(); err != nil || strings.TrimSpace(string(name)) != "main" {
			t.Errorf("%s is not a command (package %s, %v)", b.pkg, name, err)
		}
	}
	if !*buildImages {
		return
	}
	// The Dockerfiles' go build itself, as the image build runs it, to a
	// temporary folder instead of /out.
	out := t.TempDir()
	for _, b := range builds {
		args := slices.Clone(b.args)
		for i, a := range args {
			if a == b.output {
				args[i] = filepath.Join(out, filepath.Base(b.output))
			}
		}
		cmd := exec.Command("go", append([]string{"build"}, args...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("CGO_ENABLED=0 go build %s: %v\n%s", strings.Join(b.args, " "), err, msg)
		}
	}
}

// buildImages runs the Dockerfiles' go build in TestDockerfiles. Off by
// default: on a cold build cache it compiles every dependency once more
// (static, trimmed paths), minutes on two cores.
var buildImages = flag.Bool("deploycheck.build", false, "also run each Dockerfile's CGO_ENABLED=0 go build")

// parseGoBuild reads "CGO_ENABLED=0 [VAR=value ...] go build ARGS" from a
// RUN instruction (after its --mount options).
func parseGoBuild(t *testing.T, run string) *goBuild {
	t.Helper()
	w := words(run)
	i := 0
	for i < len(w) && strings.HasPrefix(w[i], "--") {
		i++
	}
	cgo := false
	for ; i < len(w) && strings.Contains(w[i], "=") && !strings.HasPrefix(w[i], "-"); i++ {
		cgo = cgo || w[i] == "CGO_ENABLED=0"
	}
	if i+1 >= len(w) || w[i] != "go" || w[i+1] != "build" {
		return nil
	}
	if !cgo {
		t.Errorf("RUN %s: not CGO_ENABLED=0; the distroless static image has no C library", run)
	}
	b := &goBuild{}
	b.args = append(b.args, w[i+2:]...)
	for j, a := range b.args {
		if a == "-o" && j+1 < len(b.args) {
			b.output = b.args[j+1]
		}
	}
	if len(b.args) > 0 {
		b.pkg = b.args[len(b.args)-1]
	}
	return b
}

// checkWorkspaceCopy: a COPY source of the build stage exists.
func checkWorkspaceCopy(t *testing.T, src string) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(root, src))
	if err != nil || len(matches) == 0 {
		t.Errorf("COPY %s: no such file in the repository", src)
	}
}

// checkGoVersion: the builder image's Go is at least the workspace's.
func checkGoVersion(t *testing.T, tag string, wf workFile) {
	t.Helper()
	img := regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`).FindStringSubmatch(tag)
	want := regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`).FindStringSubmatch(wf.goVersion)
	if img == nil || want == nil {
		t.Errorf("cannot compare Go %q of the image with go.work's %q", tag, wf.goVersion)
		return
	}
	for i := 1; i <= 3; i++ {
		a, _ := strconv.Atoi(img[i])
		b, _ := strconv.Atoi(want[i])
		if a != b {
			if a < b {
				t.Errorf("the builder image has Go %s, go.work needs %s", tag, wf.goVersion)
			}
			return
		}
	}
}

// workFile is what the checks need of go.work.
type workFile struct {
	goVersion string
	use       []string
}

// readWork reads the go and use directives of go.work (single or block
// form).
func readWork(t *testing.T) workFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var wf workFile
	inUse := false
	for line := range strings.SplitSeq(string(b), "\n") {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case inUse && f[0] == ")":
			inUse = false
		case inUse:
			wf.use = append(wf.use, f[0])
		case f[0] == "go" && len(f) == 2:
			wf.goVersion = f[1]
		case f[0] == "use" && len(f) == 2 && f[1] == "(":
			inUse = true
		case f[0] == "use" && len(f) == 2:
			wf.use = append(wf.use, f[1])
		}
	}
	if wf.goVersion == "" || len(wf.use) == 0 {
		t.Fatalf("go.work: no go version or no modules (%+v)", wf)
	}
	return wf
}

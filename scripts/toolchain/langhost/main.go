// Command pulumi-language-python is a small Pulumi language host for Python programs.
//
// It implements the parts of the LanguageRuntime gRPC service the CLI needs to run a
// Python program (preview, up, destroy, refresh):
//   - Run: starts `<python> -u pulumi-language-python-exec --monitor ... PROGRAM` with the
//     stack config in PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS, as the upstream host does;
//   - GetRequiredPlugins / GetRequiredPackages: reads the `pulumi-plugin.json` files that the
//     provider SDKs install into the virtualenv's site-packages;
//   - RunPlugin: runs a Python plugin directory, e.g. a policy pack given to
//     `pulumi preview --policy-pack DIR` (PulumiPolicy.yaml + __main__.py), with the virtualenv
//     its own runtime options name;
//   - GetPluginInfo, About, GetProgramDependencies.
//
// Everything else answers Unimplemented, which the CLI treats as "not supported".
//
// Python is chosen like upstream: `runtime.options.virtualenv` in Pulumi.yaml (relative to
// the project root) if set, else $PULUMI_PYTHON_CMD, else python3 / python on PATH.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// exitCodeUserActionable is what pulumi-language-python-exec returns after it has already
// reported an error to the user; the CLI is then told to bail without a second message.
const exitCodeUserActionable = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
}

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	// Flags the CLI or upstream tooling may pass; accepted and ignored. Some (logtostderr, v)
	// are already registered by the SDK's logging package.
	for _, name := range []string{"tracing", "root", "virtualenv", "toolchain", "typechecker"} {
		if flag.Lookup(name) == nil {
			flag.String(name, "", "ignored")
		}
	}
	for _, name := range []string{"logtostderr", "logflow"} {
		if flag.Lookup(name) == nil {
			flag.Bool(name, false, "ignored")
		}
	}
	flag.Parse()
	if *showVersion {
		fmt.Println(Version)
		return
	}
	engine := ""
	if flag.NArg() > 0 {
		engine = flag.Arg(flag.NArg() - 1)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if engine != "" {
		// Exit when the engine goes away, as upstream plugins do.
		if err := rpcutil.Healthcheck(ctx, engine, 5*60*1e9, cancel); err != nil {
			fmt.Fprintf(os.Stderr, "could not start health check for engine %s: %v\n", engine, err)
			os.Exit(1)
		}
	}

	h := &host{engineAddress: engine}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancelChannel(ctx),
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "could not start language host RPC server: %v\n", err)
		os.Exit(1)
	}
	// The CLI reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "language host RPC server stopped: %v\n", err)
		os.Exit(1)
	}
}

func cancelChannel(ctx context.Context) chan bool {
	c := make(chan bool)
	go func() {
		<-ctx.Done()
		close(c)
	}()
	return c
}

// virtualenvDir returns the absolute virtualenv path configured in Pulumi.yaml, or "".
func virtualenvDir(info *pulumirpc.ProgramInfo) string {
	if info == nil || info.GetOptions() == nil {
		return ""
	}
	v, ok := info.GetOptions().AsMap()["virtualenv"].(string)
	if !ok || v == "" {
		return ""
	}
	if filepath.IsAbs(v) {
		return v
	}
	return filepath.Join(info.GetRootDirectory(), v)
}

// pythonCommand picks the interpreter and the environment additions for a program.
func pythonCommand(info *pulumirpc.ProgramInfo) (string, []string, error) {
	if venv := virtualenvDir(info); venv != "" {
		py := filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(py); err != nil {
			return "", nil, fmt.Errorf(
				"the virtualenv %q named in Pulumi.yaml has no bin/python; create it first "+
					"(e.g. python3 -m venv %s && %s/bin/pip install -r requirements.txt)", venv, venv, venv)
		}
		path := filepath.Join(venv, "bin") + string(os.PathListSeparator) + os.Getenv("PATH")
		return py, []string{"VIRTUAL_ENV=" + venv, "PATH=" + path}, nil
	}
	if cmd := os.Getenv("PULUMI_PYTHON_CMD"); cmd != "" {
		return cmd, nil, nil
	}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil, nil
		}
	}
	return "", nil, errors.New("no python3 or python on PATH and no virtualenv configured in Pulumi.yaml")
}

// execScript finds pulumi-language-python-exec: next to this binary first, then on PATH.
func execScript() (string, error) {
	const name = "pulumi-language-python-exec"
	if self, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		candidate := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found next to the language host or on PATH", name)
}

func replaceEnv(env []string, additions []string) []string {
	keys := map[string]bool{}
	for _, kv := range additions {
		keys[strings.SplitN(kv, "=", 2)[0]] = true
	}
	out := make([]string, 0, len(env)+len(additions))
	for _, kv := range env {
		if !keys[strings.SplitN(kv, "=", 2)[0]] {
			out = append(out, kv)
		}
	}
	return append(out, additions...)
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	python, envAdd, err := pythonCommand(info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	script, err := execScript()
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}

	program := req.GetProgram()
	if info != nil && info.GetProgramDirectory() != "" {
		program = filepath.Join(info.GetProgramDirectory(), info.GetEntryPoint())
	}
	root := ""
	if info != nil {
		root = info.GetRootDirectory()
	}

	args := []string{"-u", script,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization", req.GetOrganization())
	}
	if root != "" {
		args = append(args, "--root_directory", root)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{} // "null" would break the SDK's set_all_config
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	envAdd = append(envAdd,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secrets),
		"PYTHONUNBUFFERED=1",
	)

	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = req.GetPwd()
	cmd.Env = replaceEnv(os.Environ(), envAdd)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Exited() {
				if ws.ExitStatus() == exitCodeUserActionable {
					return &runBail, nil
				}
				return &pulumirpc.RunResponse{
					Error: fmt.Sprintf("Program exited with non-zero exit code: %d", ws.ExitStatus()),
				}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited unexpectedly: %v", err)}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

var runBail = pulumirpc.RunResponse{Bail: true}

// RunPlugin runs a plugin written in Python. The CLI asks for it to start a policy pack
// (kind "analyzer": a directory with PulumiPolicy.yaml and __main__.py, `--policy-pack DIR`),
// and a Python resource provider (a directory with PulumiPlugin.yaml). As upstream's host does,
// it runs `<python> -u <plugin directory> <args...>`: Python executes the directory's
// __main__.py, which serves gRPC and prints its port on the first stdout line. The interpreter
// is the virtualenv named in the plugin's own runtime options, relative to the plugin directory
// (PulumiPolicy.yaml `runtime.options.virtualenv`), else the one pythonCommand finds.
// The plugin's output is streamed back as it comes; a non-zero exit is reported as an exit code.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest,
	server grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	info := req.GetInfo()
	dir := req.GetProgram()
	if info != nil && info.GetProgramDirectory() != "" {
		dir = info.GetProgramDirectory()
	}
	if dir == "" {
		return status.Error(codes.InvalidArgument, "RunPlugin: no plugin directory given")
	}
	if _, err := os.Stat(filepath.Join(dir, "__main__.py")); err != nil {
		return status.Errorf(codes.FailedPrecondition,
			"RunPlugin: %s has no __main__.py (a Python plugin runs from its directory's __main__.py)", dir)
	}
	python, envAdd, err := pythonCommand(info)
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}

	env := req.GetEnv()
	if len(env) == 0 {
		env = os.Environ()
	}
	args := append([]string{"-u", dir}, req.GetArgs()...)
	// The plugin lives as long as the CLI's stream: cancelling it kills the interpreter.
	cmd := exec.CommandContext(server.Context(), python, args...)
	cmd.Dir = req.GetPwd()
	cmd.Env = replaceEnv(env, append(envAdd, "PYTHONUNBUFFERED=1"))
	// exec copies each stream from its own goroutine; a gRPC stream takes one sender at a time.
	var sendMu sync.Mutex
	cmd.Stdout = &streamWriter{mu: &sendMu, send: func(b []byte) error {
		return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}})
	}}
	cmd.Stderr = &streamWriter{mu: &sendMu, send: func(b []byte) error {
		return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}})
	}}
	// Run returns once both streams are copied: the output goes out before the exit code.
	runErr := cmd.Run()
	if runErr == nil {
		return nil
	}
	var exitErr *exec.ExitError
	if errors.As(runErr, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
			code := int32(ws.ExitStatus()) //nolint:gosec // an exit status fits in 8 bits
			if ws.Signaled() {
				code = 128 + int32(ws.Signal())
			}
			return server.Send(&pulumirpc.RunPluginResponse{
				Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: code},
			})
		}
	}
	return fmt.Errorf("running the Python plugin in %s: %w", dir, runErr)
}

// streamWriter sends each chunk of a plugin's output as one RunPluginResponse.
type streamWriter struct {
	mu   *sync.Mutex
	send func([]byte) error
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// gRPC may keep the slice until the message is marshalled; exec reuses its buffer.
	if err := w.send(append([]byte(nil), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pluginJSON is the file a provider SDK installs next to its Python package.
type pluginJSON struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

// requiredPlugins lists the resource plugins of the provider SDKs installed in the virtualenv.
func requiredPlugins(info *pulumirpc.ProgramInfo) ([]*pulumirpc.PluginDependency, error) {
	venv := virtualenvDir(info)
	if venv == "" {
		return nil, nil
	}
	var files []string
	for _, pattern := range []string{
		filepath.Join(venv, "lib", "python*", "site-packages", "*", "pulumi-plugin.json"),
		filepath.Join(venv, "lib64", "python*", "site-packages", "*", "pulumi-plugin.json"),
	} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	seen := map[string]bool{}
	var deps []*pulumirpc.PluginDependency
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var p pluginJSON
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if !p.Resource || p.Name == "" || seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		deps = append(deps, &pulumirpc.PluginDependency{
			Name: p.Name, Kind: "resource", Version: p.Version, Server: p.Server,
		})
	}
	return deps, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := requiredPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: deps}, nil
}

func (h *host) GetRequiredPackages(ctx context.Context,
	req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := requiredPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	pkgs := make([]*pulumirpc.PackageDependency, 0, len(deps))
	for _, d := range deps {
		pkgs = append(pkgs, &pulumirpc.PackageDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: pkgs}, nil
}

func (h *host) GetPluginInfo(ctx context.Context, _ *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	python, envAdd, err := pythonCommand(req.GetInfo())
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, python, "--version")
	cmd.Env = replaceEnv(os.Environ(), envAdd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", python, err)
	}
	return &pulumirpc.AboutResponse{
		Executable: python,
		Version:    strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "Python")),
		Metadata:   map[string]string{"languageHost": "onboarding minimal python host " + Version, "goos": runtime.GOOS},
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	python, envAdd, err := pythonCommand(req.GetInfo())
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check")
	cmd.Env = replaceEnv(os.Environ(), envAdd)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("pip list: %w", err)
	}
	var pkgs []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &pkgs); err != nil {
		return nil, fmt.Errorf("pip list output: %w", err)
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

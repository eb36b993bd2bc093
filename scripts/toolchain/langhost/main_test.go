package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recordingStream stands in for the CLI's end of a RunPlugin stream.
type recordingStream struct {
	grpc.ServerStream
	ctx      context.Context
	mu       sync.Mutex
	stdout   strings.Builder
	stderr   strings.Builder
	exitCode *int32
}

func (s *recordingStream) Context() context.Context { return s.ctx }

func (s *recordingStream) Send(r *pulumirpc.RunPluginResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch out := r.Output.(type) {
	case *pulumirpc.RunPluginResponse_Stdout:
		s.stdout.Write(out.Stdout)
	case *pulumirpc.RunPluginResponse_Stderr:
		s.stderr.Write(out.Stderr)
	case *pulumirpc.RunPluginResponse_Exitcode:
		code := out.Exitcode
		s.exitCode = &code
	}
	return nil
}

func pluginDir(t *testing.T, main string) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not on PATH")
	}
	dir := t.TempDir()
	if main != "" {
		if err := os.WriteFile(filepath.Join(dir, "__main__.py"), []byte(main), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runPlugin(t *testing.T, dir string, args ...string) (*recordingStream, error) {
	t.Helper()
	stream := &recordingStream{ctx: context.Background()}
	err := (&host{}).RunPlugin(&pulumirpc.RunPluginRequest{
		Pwd:  t.TempDir(),
		Args: args,
		Env:  os.Environ(),
		Kind: "analyzer",
		Info: &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: "."},
	}, stream)
	return stream, err
}

func TestRunPluginRunsTheDirectoryWithItsArgsAndStreamsItsOutput(t *testing.T) {
	dir := pluginDir(t, "import sys\nprint(sys.argv[1])\nsys.stderr.write('to stderr')\n")
	stream, err := runPlugin(t, dir, "127.0.0.1:4242")
	if err != nil {
		t.Fatalf("RunPlugin: %v", err)
	}
	if got := stream.stdout.String(); got != "127.0.0.1:4242\n" {
		t.Errorf("stdout = %q, want the engine address the plugin printed", got)
	}
	if got := stream.stderr.String(); got != "to stderr" {
		t.Errorf("stderr = %q", got)
	}
	if stream.exitCode != nil {
		t.Errorf("a clean exit sent exit code %d; the stream's end says it", *stream.exitCode)
	}
}

func TestRunPluginSendsANonZeroExitCode(t *testing.T) {
	dir := pluginDir(t, "raise SystemExit(3)\n")
	stream, err := runPlugin(t, dir)
	if err != nil {
		t.Fatalf("RunPlugin: %v", err)
	}
	if stream.exitCode == nil || *stream.exitCode != 3 {
		t.Fatalf("exit code = %v, want 3", stream.exitCode)
	}
}

func TestRunPluginRefusesADirectoryWithoutMainPy(t *testing.T) {
	_, err := runPlugin(t, pluginDir(t, ""))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "__main__.py") {
		t.Fatalf("err = %v, want FailedPrecondition naming __main__.py", err)
	}
}

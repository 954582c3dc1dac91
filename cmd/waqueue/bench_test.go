package main

import (
	"slices"
	"testing"
)

// TestChildArgsRunOneStageWithoutADocument parses what `bench all` gives a stage's process
// with the real command: the user's flags stay, the stage is set, the document is off (the
// parent writes it) and a CPU profile goes to a file of the stage's own.
func TestChildArgsRunOneStageWithoutADocument(t *testing.T) {
	user := []string{"bench", "all", "--quick", "--doc", "docs/x.md", "--adapter", "postgres", "--cpuprofile", "/tmp/p", "--sizes", "1000"}
	args := childArgs(user, "clear", "/tmp/p")
	if !slices.Equal(args[:len(user)], user) {
		t.Fatalf("child args %v do not start with the user's %v", args, user)
	}
	root := newBenchCmd()
	all, rest, err := root.Find(args[1:])
	if err != nil || all.Name() != "all" {
		t.Fatalf("find all in %v: %v, %v", args, all, err)
	}
	if err := all.ParseFlags(rest); err != nil {
		t.Fatalf("parse %v: %v", rest, err)
	}
	for flag, want := range map[string]string{
		childStageFlag: "clear", "doc": "", "quick": "true", "adapter": "[postgres]", "sizes": "[1000]", "cpuprofile": "/tmp/p.clear",
	} {
		f := all.Flag(flag)
		if f == nil {
			t.Fatalf("no flag --%s", flag)
		}
		if got := f.Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	if got := childArgs(user[:3], "api", ""); slices.Contains(got, "--cpuprofile") {
		t.Errorf("child args without a profile: %v", got)
	}
}

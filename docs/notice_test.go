package docs_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// directRequires returns the module paths go.mod requires directly (no "// indirect").
func directRequires(t *testing.T, gomod string) []string {
	t.Helper()
	f, err := os.Open(gomod)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mods []string
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimSpace(strings.TrimPrefix(line, "require "))
		case !inBlock:
			continue
		}
		if line == "" || strings.HasPrefix(line, "//") || strings.Contains(line, "// indirect") {
			continue
		}
		mods = append(mods, strings.Fields(line)[0])
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return mods
}

var noticeEntry = regexp.MustCompile(`^- (\S+): (\S+(?: AND \S+)?)`)

// noticeEntries returns NOTICE's dependency list: module path → licence (SPDX).
func noticeEntries(t *testing.T, notice string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(notice)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := noticeEntry.FindStringSubmatch(line); m != nil {
			if _, dup := entries[m[1]]; dup {
				t.Errorf("NOTICE lists %s twice", m[1])
			}
			entries[m[1]] = m[2]
		}
	}
	return entries
}

// TestNoticeListsEveryDirectRequirement keeps NOTICE in step with go.mod: a new direct
// dependency without a NOTICE entry fails, and so does an entry for a module no longer required.
func TestNoticeListsEveryDirectRequirement(t *testing.T) {
	reqs := directRequires(t, filepath.Join("..", "go.mod"))
	if len(reqs) < 5 {
		t.Fatalf("parsed only %d direct requirements from go.mod: %v", len(reqs), reqs)
	}
	entries := noticeEntries(t, filepath.Join("..", "NOTICE"))
	known := map[string]bool{"Apache-2.0": true, "MIT": true, "BSD-3-Clause": true, "BSD-2-Clause": true, "MPL-2.0": true, "ISC": true, "GPL-3.0": true}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	required := map[string]bool{}
	for _, m := range reqs {
		required[m] = true
		lic, ok := entries[m]
		if !ok {
			t.Errorf("go.mod requires %s directly, but NOTICE does not list it (add \"- %s: LICENCE\" after reading its LICENSE)", m, m)
			continue
		}
		for _, l := range strings.Split(lic, " AND ") {
			// A copyleft licence reaching the binary must be explained to whoever ships it.
			if (l == "GPL-3.0" || l == "MPL-2.0") && !strings.Contains(string(readme), m) {
				t.Errorf("NOTICE: %s is %s, but README.md's licence section does not explain what it means for a distributor", m, l)
			}
			if !known[l] {
				t.Errorf("NOTICE: %s: licence %q is not an SPDX identifier this test knows", m, l)
			}
		}
	}
	var stale []string
	for m := range entries {
		if !required[m] {
			stale = append(stale, m)
		}
	}
	sort.Strings(stale)
	for _, m := range stale {
		t.Errorf("NOTICE lists %s, which go.mod no longer requires directly", m)
	}
}

// TestNoticeLicencesMatchModuleFiles checks each NOTICE licence against the module's own
// licence file in the module cache (skipped for modules not downloaded), so that an entry
// cannot name a licence the module does not carry.
func TestNoticeLicencesMatchModuleFiles(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skipf("go env GOMODCACHE: %v", err)
	}
	cache := strings.TrimSpace(string(out))
	versions := requireVersions(t, filepath.Join("..", "go.mod"))
	checked := 0
	for mod, lic := range noticeEntries(t, filepath.Join("..", "NOTICE")) {
		v, ok := versions[mod]
		if !ok {
			continue // the other test reports it
		}
		dir := filepath.Join(cache, escapeModulePath(mod)+"@"+v)
		text := licenceText(dir)
		if text == "" {
			t.Logf("%s@%s: not in the module cache; not checked", mod, v)
			continue
		}
		checked++
		if got := identify(text); got != lic {
			t.Errorf("NOTICE says %s is %s; its licence file reads as %s", mod, lic, got)
		}
	}
	if checked == 0 {
		t.Skip("no dependency in the module cache")
	}
}

func requireVersions(t *testing.T, gomod string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(gomod)
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && strings.Contains(f[0], ".") && strings.HasPrefix(f[1], "v") {
			v[f[0]] = f[1]
		}
	}
	return v
}

// escapeModulePath is the module cache's case encoding: "A" → "!a".
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func licenceText(dir string) string {
	for _, name := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			return string(b)
		}
	}
	return ""
}

// identify names a licence text by phrases each licence alone contains.
func identify(text string) string {
	apache := strings.Contains(text, "Apache License") && strings.Contains(text, "Version 2.0")
	mit := strings.Contains(text, "Permission is hereby granted, free of charge")
	switch {
	case strings.Contains(text, "GNU GENERAL PUBLIC LICENSE") && strings.Contains(text, "Version 3, 29 June 2007"):
		return "GPL-3.0"
	case strings.Contains(text, "Mozilla Public License Version 2.0"):
		return "MPL-2.0"
	case apache && mit:
		return "MIT AND Apache-2.0"
	case apache:
		return "Apache-2.0"
	case mit:
		return "MIT"
	case strings.Contains(text, "Redistributions in binary form") && strings.Contains(text, "Neither the name"):
		return "BSD-3-Clause"
	case strings.Contains(text, "Redistributions in binary form"):
		return "BSD-2-Clause"
	}
	return "unknown"
}

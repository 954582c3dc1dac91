package auth_test

import (
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/domain/auth"
)

// TestSystemRightOnlyForSystemPrincipal: no role grants auth.System, no principal that a key,
// a literal or a decoder can make holds it; only SystemPrincipal does, inside its own tenant.
func TestSystemRightOnlyForSystemPrincipal(t *testing.T) {
	for _, r := range auth.Roles() {
		if r.Grants(auth.System) {
			t.Errorf("role %s grants the system right", r)
		}
		p := auth.Principal{TenantID: "t1", ID: "key_1", Role: r}
		if p.Can(auth.System) || p.IsSystem() || p.Authorize("t1", auth.System) == nil {
			t.Errorf("a %s key principal holds the system right", r)
		}
	}
	if slices.Contains(auth.Rights(), auth.System) {
		t.Error("Rights lists the system right")
	}
	if _, err := auth.ParseRight("system"); err == nil {
		t.Error("ParseRight knows the system right")
	}
	var decoded auth.Principal
	if err := json.Unmarshal([]byte(`{"tenant_id":"t1","id":"system","role":"admin","system":true,"System":true}`), &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.IsSystem() || decoded.Can(auth.System) {
		t.Error("a decoded principal is the system principal")
	}
	sys := auth.SystemPrincipal("t1", "system")
	if !sys.IsSystem() || sys.Authorize("t1", auth.System) != nil || !sys.Can(auth.ConnectionEdit) {
		t.Errorf("the system principal lacks its rights: %+v", sys)
	}
	if err := sys.Authorize("t2", auth.System); err == nil {
		t.Error("the system principal of t1 may act in t2")
	}
	if b, err := json.Marshal(sys); err != nil || strings.Contains(string(b), "system\":") {
		t.Errorf("the system mark is encoded: %s, %v", b, err)
	}
}

// TestSystemPrincipalCallers: only the node's own processes build the system principal. A new
// caller (an HTTP handler, the broker, the key registry) fails this test: there, a request or
// a message would decide to act as the node.
func TestSystemPrincipalCallers(t *testing.T) {
	allowed := []string{"domain/auth", "commands", "projections/dispatcher"}
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	found := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "vendor" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "SystemPrincipal" {
				return true
			}
			found++
			if !slices.Contains(allowed, rel) {
				t.Errorf("%s: %s builds the system principal; only %v may", fset.Position(sel.Pos()), rel, allowed)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no caller of SystemPrincipal found: is the walk looking at the module?")
	}
}

// TestPlatformOperator: only a principal marked by PlatformOperator (an admin) acts in another
// tenant, and only as an admin of that tenant under its own id; no literal or decoder can mark one.
func TestPlatformOperator(t *testing.T) {
	op := auth.PlatformOperator(auth.Principal{TenantID: "default", ID: "key_op", Role: auth.RoleAdmin})
	if !op.IsPlatformOperator() {
		t.Fatal("the platform operator is not one")
	}
	in, err := op.ActingIn("acme")
	if err != nil || in.TenantID != "acme" || in.ID != "key_op" || in.Role != auth.RoleAdmin || in.IsPlatformOperator() {
		t.Fatalf("ActingIn = %+v, %v", in, err)
	}
	for _, p := range []auth.Principal{
		{TenantID: "default", ID: "key_a", Role: auth.RoleAdmin},
		auth.PlatformOperator(auth.Principal{TenantID: "default", ID: "key_s", Role: auth.RoleSender}),
		auth.SystemPrincipal("default", "system"),
	} {
		if p.IsPlatformOperator() {
			t.Errorf("%+v is a platform operator", p)
		}
		if _, err := p.ActingIn("acme"); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%+v ActingIn: %v, want ErrForbidden", p, err)
		}
	}
	var decoded auth.Principal
	if err := json.Unmarshal([]byte(`{"tenant_id":"default","id":"k","role":"admin","platform":true}`), &decoded); err != nil || decoded.IsPlatformOperator() {
		t.Fatalf("decoded principal is a platform operator: %+v %v", decoded, err)
	}
}

// TestPlatformOperatorCallers: only the API's authenticator marks the platform operator.
func TestPlatformOperatorCallers(t *testing.T) {
	allowed := []string{"domain/auth", "adapters/httpapi"}
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "vendor" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "PlatformOperator" && !slices.Contains(allowed, rel) {
				t.Errorf("%s: %s marks the platform operator; only %v may", fset.Position(sel.Pos()), rel, allowed)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

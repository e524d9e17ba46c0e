package k8s

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// repoRoot is the repository, seen from this module's directory (where go
// test runs).
const repoRoot = "../.."

// binaries maps an image's base name to the directory of its service's
// sources; every binary also has the shared flags of pkg/server.
var binaries = map[string]string{
	"slotkv-storage":    "services/storage",
	"slotkv-router":     "services/router",
	"slotkv-migrator":   "services/migrator",
	"slotkv-downloader": "services/downloader",
	"slotkv-console":    "services/console",
}

// sharedFlagsDir holds the flags every service binary defines (server.Flags).
const sharedFlagsDir = "pkg/server"

// envNames returns the environment variables the flagenv calls under the
// given directories (relative to the repository) bind, read from the Go
// sources: flagenv.String(fs, NAME, ENV, ...) and flagenv.StringVar(fs, p,
// NAME, ENV, ...) and their siblings, ENV a string literal or a constant
// declared in one of those sources. Test files are skipped: a variable only
// a test defines is none the binary reads.
func envNames(dirs ...string) (map[string]bool, error) {
	fset := token.NewFileSet()
	var files []*ast.File
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			files = append(files, f)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	consts := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if s, ok := stringLit(vs.Values[i]); ok {
							consts[name.Name] = s
						}
					}
				}
			}
		}
	}
	names := map[string]bool{}
	var errs []string
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "flagenv" {
				return true
			}
			// String(fs, name, env, ...) / StringVar(fs, p, name, env, ...).
			i := 2
			if strings.HasSuffix(sel.Sel.Name, "Var") {
				i = 3
			}
			if len(call.Args) <= i {
				return true // SplitList and the like
			}
			if _, isName := stringLit(call.Args[i-1]); !isName {
				return true // ParseLookup(fs, args, lookup): defines no flag
			}
			var env string
			switch a := call.Args[i].(type) {
			case *ast.BasicLit:
				env, ok = stringLit(a)
			case *ast.Ident:
				env, ok = consts[a.Name]
			case *ast.SelectorExpr: // server.EnvGRPCAddr
				env, ok = consts[a.Sel.Name]
			default:
				ok = false
			}
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: flagenv.%s: cannot resolve the environment variable argument", fset.Position(call.Pos()), sel.Sel.Name))
				return true
			}
			if env != "" {
				names[env] = true
			}
			return true
		})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return names, nil
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// binaryEnv returns, per image base name, the SLOTKV_* variables its
// binary reads.
func binaryEnv() (map[string]map[string]bool, error) {
	if _, err := os.Stat(filepath.Join(repoRoot, sharedFlagsDir)); err != nil {
		return nil, fmt.Errorf("the repository's sources are not at %s: %w", repoRoot, err)
	}
	out := map[string]map[string]bool{}
	for image, dir := range binaries {
		names, err := envNames(sharedFlagsDir, dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", image, err)
		}
		out[image] = names
	}
	return out, nil
}

// Command kubectl-lite is the small kubectl stand-in the e2e tier ships, so other tiers (the Helm
// chart check) can validate manifests against a real kube-apiserver without building kubectl:
//
//	kubectl-lite --kubeconfig K apply [--dry-run=server] [-n NS] [--ignore-missing-kinds] -f FILE|DIR|-
//	kubectl-lite --kubeconfig K delete [-n NS] -f FILE|DIR|-
//
// apply is a server-side apply (field manager "kubectl-lite", force conflicts); with
// --dry-run=server the apiserver runs validation, defaulting and admission but persists nothing.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kubectl-lite --kubeconfig FILE (apply [--dry-run=server] [--ignore-missing-kinds] | delete) [-n NAMESPACE] -f FILE|DIR|-")
	os.Exit(2)
}

func main() {
	global := flag.NewFlagSet("kubectl-lite", flag.ExitOnError)
	kubeconfig := global.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	_ = global.Parse(os.Args[1:])
	args := global.Args()
	if len(args) == 0 {
		usage()
	}
	verb := args[0]
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	var files multi
	fs.Var(&files, "f", "file, directory (*.yaml, *.yml, *.json) or - (repeatable)")
	dryRun := fs.String("dry-run", "none", "none|server")
	namespace := fs.String("n", "default", "namespace for namespaced objects that have none")
	ignoreMissing := fs.Bool("ignore-missing-kinds", false, "report kinds the apiserver does not serve (e.g. CRDs not installed) and go on")
	_ = fs.Parse(args[1:])
	if (verb != "apply" && verb != "delete") || len(files) == 0 || (*dryRun != "none" && *dryRun != "server") {
		usage()
	}
	if err := run(*kubeconfig, verb, files, *dryRun == "server", *namespace, *ignoreMissing); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func readObjects(paths []string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, p := range paths {
		var sources []string
		if p == "-" {
			sources = []string{"-"}
		} else if st, err := os.Stat(p); err != nil {
			return nil, err
		} else if st.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				ext := filepath.Ext(e.Name())
				if !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
					sources = append(sources, filepath.Join(p, e.Name()))
				}
			}
			sort.Strings(sources)
		} else {
			sources = []string{p}
		}
		for _, src := range sources {
			var data []byte
			var err error
			if src == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(src)
			}
			if err != nil {
				return nil, err
			}
			dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
			for {
				obj := map[string]any{}
				if err := dec.Decode(&obj); err != nil {
					if errors.Is(err, io.EOF) {
						break
					}
					return nil, fmt.Errorf("%s: %w", src, err)
				}
				if len(obj) == 0 {
					continue
				}
				u := &unstructured.Unstructured{Object: obj}
				if u.IsList() {
					l, err := u.ToList()
					if err != nil {
						return nil, fmt.Errorf("%s: %w", src, err)
					}
					for i := range l.Items {
						out = append(out, &l.Items[i])
					}
					continue
				}
				if u.GetKind() == "" || u.GetAPIVersion() == "" {
					return nil, fmt.Errorf("%s: object without apiVersion/kind", src)
				}
				out = append(out, u)
			}
		}
	}
	return out, nil
}

func run(kubeconfig, verb string, files []string, dry bool, namespace string, ignoreMissing bool) error {
	objs, err := readObjects(files)
	if err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var failures []string
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		ref := strings.ToLower(gvk.Kind) + "/" + u.GetName()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			if meta.IsNoMatchError(err) && ignoreMissing {
				fmt.Printf("%s skipped: kind %s not served by this apiserver\n", ref, gvk)
				continue
			}
			failures = append(failures, fmt.Sprintf("%s: %v", ref, err))
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if u.GetNamespace() == "" {
				u.SetNamespace(namespace)
			}
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		ref = m.Resource.Resource + "." + m.Resource.Group + "/" + u.GetName()
		ref = strings.Replace(ref, "./", "/", 1)
		var dryRun []string
		suffix := ""
		if dry {
			dryRun = []string{metav1.DryRunAll}
			suffix = " (server dry run)"
		}
		switch verb {
		case "apply":
			data, err := u.MarshalJSON()
			if err != nil {
				return err
			}
			force := true
			if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
				FieldManager: "kubectl-lite", Force: &force, DryRun: dryRun}); err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", ref, err))
				continue
			}
			fmt.Printf("%s serverside-applied%s\n", ref, suffix)
		case "delete":
			if err := ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{DryRun: dryRun}); err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", ref, err))
				continue
			}
			fmt.Printf("%s deleted%s\n", ref, suffix)
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d objects failed:\n  %s", len(failures), len(objs), strings.Join(failures, "\n  "))
	}
	return nil
}

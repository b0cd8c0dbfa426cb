package check

import (
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// An Object is one rendered manifest, decoded into its client-go type
// (*appsv1.Deployment, *corev1.Service, ...).
type Object struct {
	Kind, Name, Namespace string
	Obj                   runtime.Object
}

// String is Kind/name, as problems name the object.
func (o Object) String() string { return o.Kind + "/" + o.Name }

// A Problem is one thing wrong with a manifest: the object, the field (in
// the dotted form kubectl explain and the API's errors use) and what is
// wrong with it.
type Problem struct {
	Object string // Kind/name
	Field  string // spec.template.spec.containers[0].env[1]; empty for the whole object
	Msg    string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Object + ": " + p.Msg
	}
	return p.Object + ": " + p.Field + ": " + p.Msg
}

// strict decodes YAML into client-go's types, refusing unknown and
// duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// fieldInError finds the field path in a strict decoding error, such as
// `unknown field "spec.template.spec.containers[0].imagePulPolicy"`.
var fieldInError = regexp.MustCompile(`^(unknown|duplicate) field "([^"]*)"$`)

// Render builds the kustomization in dir with the Kustomize API, as
// `kubectl apply -k dir` would, and decodes each object it yields strictly
// through client-go's scheme. Each unknown or duplicate field is a Problem,
// and so is an object that does not decode at all (a kind client-go does
// not know); a kustomization that does not build is the error.
func Render(dir string) ([]Object, []Problem, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []Object
	var problems []Problem
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, nil, fmt.Errorf("%s/%s: %w", r.GetKind(), r.GetName(), err)
		}
		o := Object{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace()}
		obj, _, err := strict.Decode(y, nil, nil)
		if err != nil {
			problems = append(problems, decodeProblems(o.String(), err)...)
		}
		// With only unknown or duplicate fields, the object still decodes
		// (without them), and the other checks go on with it, so that one
		// misspelt field does not also show as, say, a Service selecting
		// nothing.
		if obj != nil && (err == nil || runtime.IsStrictDecodingError(err)) {
			o.Obj = obj
			objs = append(objs, o)
		}
	}
	return objs, problems, nil
}

// decodeProblems turns a decoding error into a Problem per field it names.
func decodeProblems(object string, err error) []Problem {
	serr, ok := runtime.AsStrictDecodingError(err)
	if !ok {
		return []Problem{{Object: object, Msg: "does not decode as a Kubernetes object client-go knows: " + err.Error()}}
	}
	var ps []Problem
	for _, e := range serr.Errors() {
		if m := fieldInError.FindStringSubmatch(e.Error()); m != nil {
			ps = append(ps, Problem{Object: object, Field: m[2], Msg: m[1] + " field"})
		} else {
			ps = append(ps, Problem{Object: object, Msg: e.Error()})
		}
	}
	return ps
}

package check

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// progs are the programs built from this checkout, once for every test.
var progs map[string]*Program

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "k8s-check-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	progs, err = Build(context.Background(), "../../..", dir)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// kustomizations are the base and every overlay.
func kustomizations(t *testing.T) []string {
	t.Helper()
	overlays, err := filepath.Glob("../overlays/*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{"../base"}
	for _, k := range overlays {
		dirs = append(dirs, filepath.Dir(k))
	}
	return dirs
}

// render renders dir and checks it, failing the test if it does not build.
func render(t *testing.T, dir string) ([]Object, Report) {
	t.Helper()
	objs, problems, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(t.Context(), objs, progs)
	r.Problems = append(problems, r.Problems...)
	return objs, r
}

// TestManifests renders the base and every overlay, and holds each against
// the programs: no problem, and each overlay does what it says.
func TestManifests(t *testing.T) {
	dirs := kustomizations(t)
	if want := []string{"../base", "../overlays/lab", "../overlays/proxy", "../overlays/sentinel"}; !slices.Equal(dirs, want) {
		t.Errorf("kustomizations: got %q, want %q", dirs, want)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs, r := render(t, dir)
			for _, p := range r.Problems {
				t.Errorf("%s: %s", dir, p)
			}
			// Every program runs, and its check accepted its settings:
			// one container each, Kind/name program.
			var ran []string
			for _, c := range r.Checked {
				ran = append(ran, c.Object+" "+c.Program)
			}
			slices.Sort(ran)
			want := []string{"Deployment/backend backend", "Deployment/dispatcher dispatcher"}
			if filepath.Base(dir) == "lab" {
				want = []string{"Deployment/backend backend", "Deployment/dispatcher dispatcher",
					"Deployment/lab-console lab", "Deployment/lab-fast1 backend", "Deployment/lab-fast2 backend",
					"Deployment/lab-slow backend", "Job/lab-seed seeder", "StatefulSet/lab-dispatcher dispatcher"}
			}
			if !slices.Equal(ran, want) {
				t.Errorf("containers checked: got %q, want %q", ran, want)
			}
			checkStack(t, objs)
			checkHardened(t, objs)

			// What each workload's program uses, as its check printed it.
			// The backends register themselves, each advertising its pod's
			// IP (the check's sample, 192.0.2.10).
			settings := map[string]string{
				"Deployment/dispatcher MODE": "redirect", "Deployment/dispatcher STRATEGY": "round-robin",
				"Deployment/dispatcher PORT": "8000", "Deployment/dispatcher ADMIN_PORT": "8080",
				"Deployment/dispatcher REDIS_URL": "redis://redis:6379/0", "Deployment/dispatcher REDIS_KEY": "servers",
				"Deployment/backend PORT": "5000", "Deployment/backend REGISTER": "1",
				"Deployment/backend ADVERTISE_URL": "http://192.0.2.10:5000", "Deployment/backend DRAIN_TIMEOUT": "10s",
				"Deployment/backend REDIS_URL": "redis://redis:6379/0", "Deployment/backend REDIS_KEY": "servers",
			}
			switch filepath.Base(dir) {
			case "proxy":
				settings["Deployment/dispatcher MODE"], settings["Deployment/dispatcher STRATEGY"] = "proxy", "least-conn"
			case "sentinel":
				sentinel := "redis+sentinel://redis-0.redis:26379/0?master_name=mymaster&addr=redis-1.redis:26379&addr=redis-2.redis:26379"
				settings["Deployment/dispatcher REDIS_URL"], settings["Deployment/backend REDIS_URL"] = sentinel, sentinel
				checkSentinel(t, objs)
			case "lab":
				maps.Copy(settings, map[string]string{
					"StatefulSet/lab-dispatcher MODE": "proxy", "StatefulSet/lab-dispatcher STRATEGY": "round-robin",
					"StatefulSet/lab-dispatcher REDIS_KEY": "lab", "StatefulSet/lab-dispatcher HASH_KEY": "header:X-User",
					"StatefulSet/lab-dispatcher EJECT_AFTER": "0", "StatefulSet/lab-dispatcher HEALTH_INTERVAL": "1s",
					"Job/lab-seed REDIS_KEY": "lab", "Deployment/lab-console REDIS_KEY": "lab",
					"Deployment/lab-console LAB_ADDR": "0.0.0.0:8099", "Deployment/lab-console REDIS_URL": "redis://redis:6379/0",
					"Deployment/lab-slow BACKEND_NAME": "slow", "Deployment/lab-slow LATENCY": "200ms", "Deployment/lab-slow CAPACITY": "4",
					"Deployment/lab-fast1 BACKEND_NAME": "fast1", "Deployment/lab-fast1 LATENCY": "40ms", "Deployment/lab-fast1 CAPACITY": "8",
					"Deployment/lab-fast2 CONTROL": "1", "Deployment/lab-fast2 CONTROL_BIND_HOST": "0.0.0.0",
					"Deployment/lab-fast2 REGISTER": "0",
				})
				checkLab(t, objs, r)
			}
			for key, want := range settings {
				obj, name, _ := strings.Cut(key, " ")
				found := false
				for _, c := range r.Checked {
					if c.Object == obj {
						found = true
						if got, _ := c.Settings.Get(name); got != want {
							t.Errorf("%s %s: the %s uses %s=%q, want %q", c.Object, c.Container, c.Program, name, got, want)
						}
					}
				}
				if !found {
					t.Errorf("%s: no container of it was checked", obj)
				}
			}
		})
	}
}

// checkStack checks what every rendering holds: the objects the base
// defines, with their replicas.
func checkStack(t *testing.T, objs []Object) {
	t.Helper()
	var got []string
	for _, o := range objs {
		got = append(got, o.String())
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			if want, ok := map[string]int32{"backend": 3, "dispatcher": 2}[o.Name]; ok && (obj.Spec.Replicas == nil || *obj.Spec.Replicas != want) {
				t.Errorf("%s: replicas %v, want %d", o, obj.Spec.Replicas, want)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if obj.Spec.MinReplicas == nil || *obj.Spec.MinReplicas != 2 {
				t.Errorf("%s: minReplicas %v, want 2", o, obj.Spec.MinReplicas)
			}
		}
	}
	for _, want := range []string{"StatefulSet/redis", "Service/redis", "Deployment/backend",
		"Deployment/dispatcher", "Service/dispatcher", "Service/dispatcher-admin", "PodDisruptionBudget/dispatcher",
		"HorizontalPodAutoscaler/dispatcher", "NetworkPolicy/redis"} {
		if !slices.Contains(got, want) {
			t.Errorf("rendered %q, want %s among them", got, want)
		}
	}
	// The kustomizations' images entries reach every container: each runs
	// an image with a tag, as a user's own entries would rewrite it.
	for _, pt := range podTemplates(objs) {
		for _, c := range append(pt.spec.InitContainers, pt.spec.Containers...) {
			want := "latest"
			if ProgramOf(c.Image) == "" {
				want = "7-alpine"
			}
			if _, tag, _ := strings.Cut(c.Image, ":"); tag != want {
				t.Errorf("%s container %s: image %s, want the tag %s from an images entry", pt.obj, c.Name, c.Image, want)
			}
		}
	}
	for _, o := range objs {
		if svc, ok := o.Obj.(*corev1.Service); ok && o.Name == "dispatcher" && svc.Spec.Ports[0].Port != 80 {
			t.Errorf("%s: port %d, want 80", o, svc.Spec.Ports[0].Port)
		}
		if pdb, ok := o.Obj.(*policyv1.PodDisruptionBudget); ok && pdb.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("%s: minAvailable %v, want 1", o, pdb.Spec.MinAvailable)
		}
	}
}

// checkLab checks that the lab overlay's console drives what the overlay
// runs: each of its LAB_BACKENDS is an entry that the Job seeds into the
// list "lab", with a control URL that is a Service's port 9000 sending to
// that backend's control port; each of its LAB_DISPATCHERS names a pod of
// the lab's dispatchers by its DNS name, main port then admin port; and
// only the console may reach the backends' control port.
func checkLab(t *testing.T, objs []Object, r Report) {
	t.Helper()
	env := map[string]string{}
	for _, c := range r.Checked {
		if c.Object == "Deployment/lab-console" {
			for _, s := range c.Settings {
				env[s.Name] = s.Value
			}
		}
	}
	var seeded []string
	services := map[string]*corev1.Service{}
	var dispatchers *appsv1.StatefulSet
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *batchv1.Job:
			if o.Name == "lab-seed" {
				seeded = obj.Spec.Template.Spec.Containers[0].Args
			}
		case *corev1.Service:
			services[o.Name] = obj
		case *appsv1.StatefulSet:
			if o.Name == "lab-dispatcher" {
				dispatchers = obj
			}
		case *networkingv1.NetworkPolicy:
			if o.Name != "lab-backend" {
				continue
			}
			var rules []string
			for _, in := range obj.Spec.Ingress {
				rules = append(rules, fmt.Sprintf("%s from %s", in.Ports[0].Port, in.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"]))
			}
			if want := []string{"http from lab-dispatcher", "control from lab-console"}; !slices.Equal(rules, want) {
				t.Errorf("%s: ingress %q, want %q", o, rules, want)
			}
		}
	}
	var entries []string
	for pair := range strings.SplitSeq(env["LAB_BACKENDS"], ",") {
		entry, control, _ := strings.Cut(pair, "=")
		entries = append(entries, entry)
		host, port := hostPort(t, control)
		svc := services[host]
		if svc == nil {
			t.Errorf("LAB_BACKENDS: %s: no Service %s", control, host)
			continue
		}
		if i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }); i < 0 || svc.Spec.Ports[i].TargetPort.String() != "control" {
			t.Errorf("LAB_BACKENDS: %s: Service/%s has no port %s to the control port", control, host, port)
		}
	}
	if want := append([]string{"seed"}, entries...); !slices.Equal(seeded, want) {
		t.Errorf("Job/lab-seed: args %q, want %q: the console's LAB_BACKENDS", seeded, want)
	}
	if dispatchers == nil {
		t.Fatal("no StatefulSet/lab-dispatcher")
	}
	var want []string
	for i := range *dispatchers.Spec.Replicas {
		host := fmt.Sprintf("http://%s-%d.%s", dispatchers.Name, i, dispatchers.Spec.ServiceName)
		want = append(want, host+":8000="+host+":8080")
	}
	if got := env["LAB_DISPATCHERS"]; got != strings.Join(want, ",") {
		t.Errorf("Deployment/lab-console: LAB_DISPATCHERS=%q, want %q", got, strings.Join(want, ","))
	}
	if svc := services[dispatchers.Spec.ServiceName]; svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service/%s: want a headless Service, which gives the pods their DNS names", dispatchers.Spec.ServiceName)
	}
}

// hostPort splits an http URL into its host and port.
func hostPort(t *testing.T, raw string) (string, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return u.Hostname(), u.Port()
}

// checkHardened checks that every container runs as a user other than
// root, with a read-only root filesystem, no capability, and requests and
// limits of CPU and memory.
func checkHardened(t *testing.T, objs []Object) {
	t.Helper()
	for _, pt := range podTemplates(objs) {
		pod := pt.spec.SecurityContext
		for _, c := range append(pt.spec.InitContainers, pt.spec.Containers...) {
			sc := c.SecurityContext
			nonRoot := sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot ||
				pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot && (sc == nil || sc.RunAsNonRoot == nil)
			switch {
			case !nonRoot:
				t.Errorf("%s container %s: not runAsNonRoot", pt.obj, c.Name)
			case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s container %s: root filesystem not read-only", pt.obj, c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s container %s: allowPrivilegeEscalation not false", pt.obj, c.Name)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s container %s: capabilities %v, want drop ALL and add none", pt.obj, c.Name, sc.Capabilities)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[r]; !ok {
					t.Errorf("%s container %s: no %s request", pt.obj, c.Name, r)
				}
				if _, ok := c.Resources.Limits[r]; !ok {
					t.Errorf("%s container %s: no %s limit", pt.obj, c.Name, r)
				}
			}
		}
	}
}

// checkSentinel checks the sentinel overlay's Redis: three pods, each with
// a Sentinel, reachable by the clients.
func checkSentinel(t *testing.T, objs []Object) {
	t.Helper()
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *appsv1.StatefulSet:
			var names []string
			for _, c := range obj.Spec.Template.Spec.Containers {
				names = append(names, c.Name)
			}
			if *obj.Spec.Replicas != 3 || !slices.Equal(names, []string{"redis", "sentinel"}) {
				t.Errorf("%s: %d replicas of %q, want 3 of redis and sentinel", o, *obj.Spec.Replicas, names)
				continue
			}
			cs := obj.Spec.Template.Spec.Containers
			if cs[0].Image != "redis:7-alpine" || cs[1].Image != cs[0].Image {
				t.Errorf("%s: images %s and %s, want redis:7-alpine for both", o, cs[0].Image, cs[1].Image)
			}
		case *networkingv1.NetworkPolicy:
			var ports []string
			for _, p := range obj.Spec.Ingress[0].Ports {
				ports = append(ports, p.Port.String())
			}
			if !slices.Equal(ports, []string{"redis", "sentinel"}) {
				t.Errorf("%s: ports %q, want redis and sentinel", o, ports)
			}
		}
	}
}

// TestBrokenManifests renders small overlays of the base or the lab overlay
// from testdata, each broken in one way, and checks that the check finds
// exactly that, naming the object and the field; and what is right in a way
// the check must accept (control-port, ipv6-pod, and POD_NAME in
// helper-variable).
func TestBrokenManifests(t *testing.T) {
	tests := []struct {
		dir  string
		want []string
	}{
		{"unknown-env", []string{
			"Deployment/backend: spec.template.spec.containers[0].env[0].name: BACKEND_COLOR is not a setting of the backend, which reads PORT, BACKEND_NAME, LATENCY, LATENCY_JITTER, CAPACITY",
		}},
		{"refused-value", []string{
			`Deployment/backend: spec.template.spec.containers[0].env[0]: the backend refuses it: backend: CAPACITY="lots": want a whole number, 0 or more`,
		}},
		{"refused-combination", []string{
			"Deployment/dispatcher: spec.template.spec.containers[0].env[0]: the dispatcher refuses it: dispatcher: STRATEGY=least-conn",
		}},
		{"wrong-probe-port", []string{
			"Deployment/backend: spec.template.spec.containers[0].readinessProbe.httpGet.port: 5001: the backend listens on 5000 (PORT)",
		}},
		{"wrong-service-port", []string{
			"Service/dispatcher-admin: spec.ports[0].targetPort: 9090: no container of Deployment/dispatcher listens there (the dispatcher listens on 8000 (PORT), 8080 (ADMIN_PORT))",
		}},
		{"moved-admin-port", []string{
			"Deployment/dispatcher: spec.template.spec.containers[0].ports[1].containerPort: 8080: the dispatcher listens on 8000 (PORT), 9090 (ADMIN_PORT)",
			"Deployment/dispatcher: spec.template.spec.containers[0].readinessProbe.httpGet.port: admin: the dispatcher listens on 8000 (PORT), 9090 (ADMIN_PORT)",
			"Deployment/dispatcher: spec.template.spec.containers[0].livenessProbe.httpGet.port: admin: the dispatcher listens on 8000 (PORT), 9090 (ADMIN_PORT)",
			"Service/dispatcher-admin: spec.ports[0].targetPort: admin: no container of Deployment/dispatcher listens there (the dispatcher listens on 8000 (PORT), 9090 (ADMIN_PORT))",
		}},
		{"admin-on-loopback", []string{
			"Deployment/dispatcher: spec.template.spec.containers[0].ports[1].containerPort: 8080: the dispatcher listens on 8000 (PORT) where the pod is reached, and on 8080 (ADMIN_PORT, bound to 127.0.0.1) only inside the pod",
			"Deployment/dispatcher: spec.template.spec.containers[0].readinessProbe.httpGet.port: admin: the dispatcher listens on 8000 (PORT) where the pod is reached",
			"Deployment/dispatcher: spec.template.spec.containers[0].livenessProbe.httpGet.port: admin: the dispatcher listens on 8000 (PORT) where the pod is reached",
			"Service/dispatcher-admin: spec.ports[0].targetPort: admin: no container of Deployment/dispatcher listens there",
		}},
		{"control-port", nil},
		{"ipv6-pod", nil},
		{"unknown-field", []string{
			"Deployment/backend: spec.template.spec.containers[0].imagePulPolicy: unknown field",
		}},
		{"selector-matches-nothing", []string{
			"Service/dispatcher-admin: spec.selector: app.kubernetes.io/name=dispatchers matches no pod template",
		}},
		{"service-link", []string{
			"Deployment/dispatcher: spec.template.spec.enableServiceLinks: Service/admin makes Kubernetes set ADMIN_PORT in the pod, and the dispatcher reads it as its setting",
		}},
		{"advertised-wrong-port", []string{
			"Deployment/backend: spec.template.spec.containers[0].env[1]: ADVERTISE_URL=http://192.0.2.10:5001: the other programs would reach the backend on port 5001, and the backend listens on 5000 (PORT)",
		}},
		{"helper-after-use", []string{
			"Deployment/backend: spec.template.spec.containers[0].env[4].name: POD_IP is used by ADVERTISE_URL, env[0], before it is set",
			`Deployment/backend: spec.template.spec.containers[0].env[0]: the backend refuses it: backend: ADVERTISE_URL="http://$(POD_IP):5000"`,
		}},
		{"grace-shorter-than-drain", []string{
			"Deployment/backend: spec.template.spec.terminationGracePeriodSeconds: 15: the backend may take 20s to stop after SIGTERM (DRAIN_TIMEOUT=20s), and Kubernetes kills it after 15 s",
		}},
		{"prestop-beyond-grace", []string{
			"Deployment/dispatcher: spec.template.spec.terminationGracePeriodSeconds: 15: the dispatcher may take 10s to stop after SIGTERM (SHUTDOWN_TIMEOUT=10s), after its preStop sleep of 10s, and Kubernetes kills it after 15 s",
		}},
		{"lab-unknown-env", []string{
			"Deployment/lab-console: spec.template.spec.containers[0].env[0].name: LAB_RATES is not a setting of the lab, which reads LAB_SCENARIO, LAB_DURATION, LAB_RATE,",
		}},
		{"lab-refused-value", []string{
			`Deployment/lab-console: spec.template.spec.containers[0].env[0]: the lab refuses it: lab: LAB_BACKENDS="http://lab-slow:5000=http://lab-slow:9000": want two backends or more`,
		}},
		{"lab-moved-addr", []string{
			"Deployment/lab-console: spec.template.spec.containers[0].ports[0].containerPort: 8099: the lab listens on 8098 (LAB_ADDR)",
			"Deployment/lab-console: spec.template.spec.containers[0].readinessProbe.httpGet.port: http: the lab listens on 8098 (LAB_ADDR)",
			"Deployment/lab-console: spec.template.spec.containers[0].livenessProbe.httpGet.port: http: the lab listens on 8098 (LAB_ADDR)",
			"Service/lab-console: spec.ports[0].targetPort: http: no container of Deployment/lab-console listens there (the lab listens on 8098 (LAB_ADDR))",
		}},
		{"helper-variable", []string{
			"Deployment/backend: spec.template.spec.containers[0].env[2].name: STRAY_POD_IP is not a setting of the backend",
		}},
	}
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(tests) {
		t.Errorf("testdata holds %d overlays, the table %d", len(entries), len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			_, r := render(t, filepath.Join("testdata", tc.dir))
			var got []string
			for _, p := range r.Problems {
				got = append(got, p.String())
			}
			for _, want := range tc.want {
				if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, want) }) {
					t.Errorf("problems:\n%s\nwant one starting %q", strings.Join(got, "\n"), want)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
		})
	}
}

// TestHelperVariable checks what the backend makes of a value built from
// the pod's own fields: BACKEND_NAME=backend $(POD_NAME) reaches its check
// as the name of a pod.
func TestHelperVariable(t *testing.T) {
	_, r := render(t, "testdata/helper-variable")
	for _, c := range r.Checked {
		if c.Program == "backend" {
			if got, _ := c.Settings.Get("BACKEND_NAME"); got != "backend pod-0" {
				t.Errorf("BACKEND_NAME: got %q, want %q", got, "backend pod-0")
			}
			return
		}
	}
	t.Error("the backend's settings were not checked")
}

// TestIPv6PodAddress checks that a backend advertising its pod's IPv6
// address in brackets, http://[$(POD_IP)]:5000, reaches its check with an
// IPv6 address there, which it accepts.
func TestIPv6PodAddress(t *testing.T) {
	_, r := render(t, "testdata/ipv6-pod")
	for _, c := range r.Checked {
		if c.Program == "backend" && c.Object == "Deployment/backend" {
			if got, _ := c.Settings.Get("ADVERTISE_URL"); got != "http://[2001:db8::10]:5000" {
				t.Errorf("ADVERTISE_URL: got %q, want %q", got, "http://[2001:db8::10]:5000")
			}
			return
		}
	}
	t.Errorf("the backend's settings were not checked: %v", r.Problems)
}

func TestProgramOf(t *testing.T) {
	for image, want := range map[string]string{
		"spread-dispatcher":                                  "dispatcher",
		"spread-backend:latest":                              "backend",
		"registry.example.com:5000/team/spread-seeder:v1.2":  "seeder",
		"registry.example.com/spread-backend@sha256:0123abc": "backend",
		"redis:7-alpine":                                     "",
		"spread-lab":                                         "lab",
		"spread-labs":                                        "",
		"example.com/spread-dispatcher-old":                  "",
	} {
		if got := ProgramOf(image); got != want {
			t.Errorf("ProgramOf(%q): got %q, want %q", image, got, want)
		}
	}
}

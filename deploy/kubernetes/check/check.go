package check

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/filters/refvar"
)

// goRuntime are variables that the Go runtime of every program reads. They
// are accepted on a program's container, and passed to its `check` like the
// others, where the runtime judges those it validates (a malformed
// GOMEMLIMIT stops the program before main).
var goRuntime = []string{"GOMAXPROCS", "GOMEMLIMIT", "GOGC", "GODEBUG", "GOTRACEBACK"}

// fieldSamples are the values that a variable set from the pod's own fields
// (valueFrom.fieldRef) takes for the check, as it would in some pod: an
// address from the documentation range (RFC 5737), which nothing dials.
// `check` only parses them.
var fieldSamples = map[string]string{
	"metadata.name":           "pod-0",
	"metadata.namespace":      "default",
	"spec.nodeName":           "node-0",
	"spec.serviceAccountName": "default",
	"status.podIP":            "192.0.2.10",
	"status.hostIP":           "192.0.2.1",
}

// ipv6Samples are the samples of the address fields on a cluster whose pods
// have IPv6 addresses (RFC 3849's documentation range): a value that puts
// such a variable in brackets, as a URL must, "http://[$(POD_IP)]:5000", is
// meant for one, and gets these.
var ipv6Samples = map[string]string{
	"status.podIP":  "2001:db8::10",
	"status.hostIP": "2001:db8::1",
}

// A Report is what Check found: the problems, and for each container of a
// program whose settings its `check` accepted, what it printed.
type Report struct {
	Problems []Problem
	Checked  []Checked
}

// Checked is a container whose program accepted its settings.
type Checked struct {
	Object    string // Kind/name of the workload
	Container string
	Program   string
	Settings  Settings // as the program's check printed them
}

// Check holds objs (one rendering, see Render) against progs, the programs
// built from the checkout (see Build), as the package comment says.
func Check(ctx context.Context, objs []Object, progs map[string]*Program) Report {
	c := &checker{ctx: ctx, progs: progs}
	for _, t := range podTemplates(objs) {
		c.pods = append(c.pods, c.pod(t))
		c.serviceLinks(t, objs)
	}
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *corev1.Service:
			c.service(o, obj)
		case *policyv1.PodDisruptionBudget:
			c.selects(o, "spec.selector", obj.Spec.Selector)
		case *networkingv1.NetworkPolicy:
			c.networkPolicy(o, obj)
		case *autoscalingv2.HorizontalPodAutoscaler:
			c.scaleTarget(o, objs, obj.Spec.ScaleTargetRef)
		}
	}
	return c.report
}

type checker struct {
	ctx    context.Context
	progs  map[string]*Program
	pods   []pod
	report Report
}

func (c *checker) problem(o, field, format string, args ...any) {
	c.report.Problems = append(c.report.Problems, Problem{Object: o, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// A template is the pod template of a workload.
type template struct {
	obj      Object
	specPath string // where the pod's spec is: spec.template.spec, or spec for a Pod
	meta     metav1.ObjectMeta
	spec     corev1.PodSpec
	selector *metav1.LabelSelector // the workload's own; nil where there is none
}

// podTemplates finds the pod template of every workload in objs.
func podTemplates(objs []Object) []template {
	var ts []template
	add := func(o Object, path string, pt corev1.PodTemplateSpec, sel *metav1.LabelSelector) {
		ts = append(ts, template{obj: o, specPath: path + ".spec", meta: pt.ObjectMeta, spec: pt.Spec, selector: sel})
	}
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			add(o, "spec.template", obj.Spec.Template, obj.Spec.Selector)
		case *appsv1.StatefulSet:
			add(o, "spec.template", obj.Spec.Template, obj.Spec.Selector)
		case *appsv1.DaemonSet:
			add(o, "spec.template", obj.Spec.Template, obj.Spec.Selector)
		case *appsv1.ReplicaSet:
			add(o, "spec.template", obj.Spec.Template, obj.Spec.Selector)
		case *batchv1.Job:
			add(o, "spec.template", obj.Spec.Template, obj.Spec.Selector)
		case *batchv1.CronJob:
			add(o, "spec.jobTemplate.spec.template", obj.Spec.JobTemplate.Spec.Template, obj.Spec.JobTemplate.Spec.Selector)
		case *corev1.Pod:
			ts = append(ts, template{obj: o, specPath: "spec", meta: obj.ObjectMeta, spec: obj.Spec})
		}
	}
	return ts
}

// A pod is a checked template: what each of its containers listens on.
type pod struct {
	template
	containers []container
}

// A container is what the check knows of one container's ports.
type container struct {
	name    string
	program string // "" for an image that is not one of Programs
	// listens maps each port the container listens on, where probes and
	// Services reach it, to where that comes from: the program's setting
	// (PORT), or "declared" for another image, whose ports are those it
	// declares. nil when unknown: the program refused its settings, which
	// is a problem already.
	listens map[int32]string
	// loopback holds a program's ports bound to a loopback address, which
	// nothing outside the pod reaches, with their settings, for messages.
	loopback []string
	named    map[string]int32 // its containerPorts' names
	// stop is how long the program may take to stop after SIGTERM, as its
	// setting of stopSettings says (stopSetting: NAME=value); 0 if it has
	// none.
	stop time.Duration
	// preStop is the container's preStop sleep, which Kubernetes waits
	// out before it sends SIGTERM, within the same grace period.
	preStop     time.Duration
	stopSetting string
}

// describe says what c listens on, for a message.
func (c container) describe() string {
	var ports []string
	for _, p := range slices.Sorted(maps.Keys(c.listens)) {
		if from := c.listens[p]; from != "declared" {
			ports = append(ports, fmt.Sprintf("%d (%s)", p, from))
		} else {
			ports = append(ports, strconv.Itoa(int(p)))
		}
	}
	if len(ports) == 0 {
		ports = []string{"no port"}
	}
	if c.program != "" {
		d := fmt.Sprintf("the %s listens on %s", c.program, strings.Join(ports, ", "))
		if len(c.loopback) > 0 {
			d += fmt.Sprintf(" where the pod is reached, and on %s only inside the pod", strings.Join(c.loopback, ", "))
		}
		return d
	}
	return fmt.Sprintf("container %s declares %s", c.name, strings.Join(ports, ", "))
}

// resolve turns a port given by number or by containerPort name into its
// number, as Kubernetes does for a probe of this container.
func (c container) resolve(p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		return p.IntVal, nil
	}
	if n, ok := c.named[p.StrVal]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.name, p.StrVal)
}

func (c *checker) pod(t template) pod {
	o := t.obj.String()
	if t.selector != nil {
		if sel, err := metav1.LabelSelectorAsSelector(t.selector); err != nil {
			c.problem(o, "spec.selector", "%v", err)
		} else if !sel.Matches(labels.Set(t.meta.Labels)) {
			c.problem(o, "spec.selector", "%s does not match the labels of its own pod template (%s.metadata.labels: %s)",
				sel, strings.TrimSuffix(t.specPath, ".spec"), labels.Set(t.meta.Labels))
		}
	}
	p := pod{template: t}
	for _, group := range []struct {
		field string
		list  []corev1.Container
	}{{"initContainers", t.spec.InitContainers}, {"containers", t.spec.Containers}} {
		for i, ctr := range group.list {
			field := fmt.Sprintf("%s.%s[%d]", t.specPath, group.field, i)
			p.containers = append(p.containers, c.container(o, field, ctr))
		}
	}
	c.gracePeriod(t, p.containers)
	return p
}

// gracePeriod checks that the pod's terminationGracePeriodSeconds (30 by
// default) is longer than each of its programs may take to stop after
// SIGTERM: Kubernetes kills them when it ends.
func (c *checker) gracePeriod(t template, containers []container) {
	grace, set := int64(corev1.DefaultTerminationGracePeriodSeconds), " (the default)"
	if g := t.spec.TerminationGracePeriodSeconds; g != nil {
		grace, set = *g, ""
	}
	for _, k := range containers {
		if k.stop > 0 && time.Duration(grace)*time.Second <= k.preStop+k.stop {
			wait := ""
			if k.preStop > 0 {
				wait = fmt.Sprintf(", after its preStop sleep of %s", k.preStop)
			}
			c.problem(t.obj.String(), t.specPath+".terminationGracePeriodSeconds",
				"%d%s: the %s may take %s to stop after SIGTERM (%s)%s, and Kubernetes kills it after %d s; give the pod more time than that",
				grace, set, k.program, k.stop, k.stopSetting, wait, grace)
		}
	}
}

// container checks one container: a program's variables and their values,
// then every container's ports and probes.
func (c *checker) container(o, field string, ctr corev1.Container) container {
	k := container{name: ctr.Name, program: ProgramOf(ctr.Image), named: map[string]int32{}}
	if l := ctr.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		k.preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	for _, p := range ctr.Ports {
		if p.Name != "" {
			k.named[p.Name] = p.ContainerPort
		}
	}
	if prog := c.progs[k.program]; prog != nil {
		if settings, ok := c.env(o, field, ctr, prog); ok {
			k.listens = map[int32]string{}
			for _, l := range settings.Listeners() {
				if l.Loopback != "" {
					k.loopback = append(k.loopback, fmt.Sprintf("%d (%s, bound to %s)", l.Port, l.Setting, l.Loopback))
				} else {
					k.listens[l.Port] = l.Setting
				}
			}
			if name := stopSettings[k.program]; name != "" {
				v, _ := settings.Get(name)
				if d, err := time.ParseDuration(v); err == nil {
					k.stop, k.stopSetting = d, name+"="+v
				}
			}
			c.advertised(o, field, ctr, k, settings)
			c.report.Checked = append(c.report.Checked, Checked{Object: o, Container: ctr.Name, Program: k.program, Settings: settings})
			for i, p := range ctr.Ports {
				if _, ok := k.listens[p.ContainerPort]; !ok {
					c.problem(o, fmt.Sprintf("%s.ports[%d].containerPort", field, i), "%d: %s", p.ContainerPort, k.describe())
				}
			}
		}
	} else {
		k.listens = map[int32]string{}
		for _, p := range ctr.Ports {
			k.listens[p.ContainerPort] = "declared"
		}
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
	}{{"startupProbe", ctr.StartupProbe}, {"readinessProbe", ctr.ReadinessProbe}, {"livenessProbe", ctr.LivenessProbe}} {
		if pr.probe == nil {
			continue
		}
		var port intstr.IntOrString
		var how string
		switch h := pr.probe.ProbeHandler; {
		case h.HTTPGet != nil:
			port, how = h.HTTPGet.Port, "httpGet"
		case h.TCPSocket != nil:
			port, how = h.TCPSocket.Port, "tcpSocket"
		case h.GRPC != nil:
			port, how = intstr.FromInt32(h.GRPC.Port), "grpc"
		default:
			continue // exec: no port
		}
		f := fmt.Sprintf("%s.%s.%s.port", field, pr.name, how)
		n, err := k.resolve(port)
		if err != nil {
			c.problem(o, f, "%v", err)
		} else if _, ok := k.listens[n]; k.listens != nil && !ok {
			c.problem(o, f, "%s: %s", port.String(), k.describe())
		}
	}
	return k
}

// advertised checks that the URL a program gives for itself (see
// advertiseSettings), as its check printed it, is on a port it listens on
// where the pod is reached.
func (c *checker) advertised(o, field string, ctr corev1.Container, k container, settings Settings) {
	a, ok := advertiseSettings[k.program]
	if !ok {
		return
	}
	if name, want, _ := strings.Cut(a.when, "="); a.when != "" {
		if v, _ := settings.Get(name); v != want {
			return
		}
	}
	raw, _ := settings.Get(a.url)
	u, err := url.Parse(raw)
	if err != nil {
		return // the program accepted it
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	n, err := strconv.Atoi(port)
	if _, listens := k.listens[int32(n)]; err == nil && listens {
		return
	}
	f := field + ".env"
	if i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == a.url }); i >= 0 {
		f = fmt.Sprintf("%s.env[%d]", field, i)
	}
	c.problem(o, f, "%s=%s: the other programs would reach the %s on port %s, and %s", a.url, raw, k.program, port, k.describe())
}

// env checks the variables set on a container of prog: each must be one of
// its settings (or the Go runtime's, or feed another through $(NAME)), and
// prog's own `check` must accept them all. It returns what check printed.
func (c *checker) env(o, field string, ctr corev1.Container, prog *Program) (Settings, bool) {
	if len(ctr.EnvFrom) > 0 {
		c.problem(o, field+".envFrom", "the check cannot know which variables it sets; set each of the %s's with env", prog.Name)
	}
	names := prog.Defaults.Names()
	var env []string
	values := map[string]string{}
	v6 := map[string]string{} // variables set from an address field -> its IPv6 sample
	for i, e := range ctr.Env {
		if !slices.Contains(names, e.Name) && !slices.Contains(goRuntime, e.Name) && !referenced(e.Name, ctr.Env[i+1:]) {
			if j := slices.IndexFunc(ctr.Env[:i], func(x corev1.EnvVar) bool { return referenced(e.Name, []corev1.EnvVar{x}) }); j >= 0 {
				// A patch that sets the user again puts it first.
				c.problem(o, fmt.Sprintf("%s.env[%d].name", field, i), "%s is used by %s, env[%d], before it is set: Kubernetes expands $(%s) only from variables listed earlier; list %s first",
					e.Name, ctr.Env[j].Name, j, e.Name, e.Name)
			} else {
				c.problem(o, fmt.Sprintf("%s.env[%d].name", field, i), "%s is not a setting of the %s, which reads %s (and the Go runtime's %s)",
					e.Name, prog.Name, strings.Join(names, ", "), strings.Join(goRuntime, ", "))
			}
		}
		var v string
		switch {
		case e.ValueFrom == nil:
			v = e.Value
			for name, ip := range v6 {
				v = strings.ReplaceAll(v, "[$("+name+")]", "["+ip+"]")
			}
			v = expand(v, values)
		case e.ValueFrom.FieldRef != nil && fieldSamples[e.ValueFrom.FieldRef.FieldPath] != "":
			v = fieldSamples[e.ValueFrom.FieldRef.FieldPath]
			if ip := ipv6Samples[e.ValueFrom.FieldRef.FieldPath]; ip != "" {
				v6[e.Name] = ip
			}
		default:
			// From a Secret, a ConfigMap or a resource: the value is not
			// known here, so the program judges its default instead.
			continue
		}
		values[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	settings, err := prog.Check(c.ctx, env)
	if err != nil {
		c.problem(o, envField(field, ctr.Env, err.Error()), "the %s refuses it: %v", prog.Name, err)
		return nil, false
	}
	return settings, true
}

// envField is the field of the variable that a program's error names: the
// first in env whose name the message holds as a word, else env itself.
func envField(field string, env []corev1.EnvVar, msg string) string {
	for i, e := range env {
		if regexp.MustCompile(`(^|[^A-Z0-9_])` + regexp.QuoteMeta(e.Name) + `([^A-Z0-9_]|$)`).MatchString(msg) {
			return fmt.Sprintf("%s.env[%d]", field, i)
		}
	}
	return field + ".env"
}

// expand replaces each $(NAME) in v by the value of NAME from the variables
// set before it, as Kubernetes does; $$ is a literal $, and a reference to
// a variable not set before stays as it is (refvar is Kustomize's copy of
// Kubernetes' expansion).
func expand(v string, before map[string]string) string {
	return fmt.Sprint(refvar.DoReplacements(v, func(name string) any {
		if x, ok := before[name]; ok {
			return x
		}
		return "$(" + name + ")"
	}))
}

// referenced reports whether a later variable's value uses $(name): then
// name is a helper, such as POD_IP for ADVERTISE_URL=http://$(POD_IP):5000.
func referenced(name string, later []corev1.EnvVar) bool {
	for _, e := range later {
		used := false
		refvar.DoReplacements(e.Value, func(n string) any {
			used = used || n == name
			return ""
		})
		if used {
			return true
		}
	}
	return false
}

// podsIn returns the pods of namespace ns that sel selects.
func (c *checker) podsIn(ns string, sel labels.Selector) []pod {
	var ps []pod
	for _, p := range c.pods {
		if p.obj.Namespace == ns && sel.Matches(labels.Set(p.meta.Labels)) {
			ps = append(ps, p)
		}
	}
	return ps
}

// selects checks that a label selector selects at least one pod template
// of o's namespace, and returns those.
func (c *checker) selects(o Object, field string, ls *metav1.LabelSelector) []pod {
	if ls == nil {
		c.problem(o.String(), field, "missing")
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		c.problem(o.String(), field, "%v", err)
		return nil
	}
	ps := c.podsIn(o.Namespace, sel)
	if len(ps) == 0 {
		c.problem(o.String(), field, "%s matches no pod template", describeSelector(sel))
	}
	return ps
}

func describeSelector(sel labels.Selector) string {
	if sel.Empty() {
		return "{} (every pod)"
	}
	return sel.String()
}

func (c *checker) service(o Object, svc *corev1.Service) {
	if len(svc.Spec.Selector) == 0 {
		return // endpoints managed elsewhere
	}
	pods := c.selects(o, "spec.selector", metav1.SetAsLabelSelector(svc.Spec.Selector))
	for i, p := range svc.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port) // by default, the Service's port
		}
		c.portOnPods(o.String(), fmt.Sprintf("spec.ports[%d].targetPort", i), target, pods)
	}
}

// portOnPods checks that each of pods has a container listening on port,
// given by number or by containerPort name.
func (c *checker) portOnPods(o, field string, port intstr.IntOrString, pods []pod) {
	for _, p := range pods {
		var why []string
		found := false
		for _, k := range p.containers {
			n, err := k.resolve(port)
			if err != nil {
				why = append(why, err.Error())
				continue
			}
			if _, ok := k.listens[n]; ok || k.listens == nil {
				found = true
				break
			}
			why = append(why, k.describe())
		}
		if !found {
			c.problem(o, field, "%s: no container of %s listens there (%s)", port.String(), p.obj, strings.Join(why, "; "))
		}
	}
}

func (c *checker) networkPolicy(o Object, np *networkingv1.NetworkPolicy) {
	pods := c.selects(o, "spec.podSelector", &np.Spec.PodSelector)
	for i, rule := range np.Spec.Ingress {
		for j, peer := range rule.From {
			if peer.PodSelector != nil && peer.NamespaceSelector == nil {
				c.selects(o, fmt.Sprintf("spec.ingress[%d].from[%d].podSelector", i, j), peer.PodSelector)
			}
		}
		for j, p := range rule.Ports {
			if p.Port != nil {
				c.portOnPods(o.String(), fmt.Sprintf("spec.ingress[%d].ports[%d].port", i, j), *p.Port, pods)
			}
		}
	}
	for i, rule := range np.Spec.Egress {
		for j, peer := range rule.To {
			if peer.PodSelector != nil && peer.NamespaceSelector == nil {
				c.selects(o, fmt.Sprintf("spec.egress[%d].to[%d].podSelector", i, j), peer.PodSelector)
			}
		}
	}
}

func (c *checker) scaleTarget(o Object, objs []Object, ref autoscalingv2.CrossVersionObjectReference) {
	for _, x := range objs {
		if x.Kind == ref.Kind && x.Name == ref.Name && x.Namespace == o.Namespace {
			return
		}
	}
	c.problem(o.String(), "spec.scaleTargetRef", "no %s/%s among the manifests", ref.Kind, ref.Name)
}

// serviceLinks checks that no Service sets, through the variables that
// Kubernetes adds to every pod of its namespace for each Service with a
// cluster IP (unless enableServiceLinks is false), a variable that a
// program of t reads: a Service "admin" sets ADMIN_PORT=tcp://IP:PORT.
func (c *checker) serviceLinks(t template, objs []Object) {
	if t.spec.EnableServiceLinks != nil && !*t.spec.EnableServiceLinks {
		return
	}
	for _, o := range objs {
		svc, ok := o.Obj.(*corev1.Service)
		if !ok || o.Namespace != t.obj.Namespace || svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for _, ctr := range append(t.spec.InitContainers, t.spec.Containers...) {
			prog := c.progs[ProgramOf(ctr.Image)]
			if prog == nil {
				continue
			}
			for _, name := range linkVariables(svc) {
				if _, reads := prog.Defaults.Get(name); reads {
					c.problem(t.obj.String(), t.specPath+".enableServiceLinks",
						"%s makes Kubernetes set %s in the pod, and the %s reads it as its setting; set enableServiceLinks: false", o, name, prog.Name)
				}
			}
		}
	}
}

// linkVariables are the names of the variables Kubernetes sets for a
// Service (Docker links' style, from the kubelet's envvars package).
func linkVariables(svc *corev1.Service) []string {
	prefix := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
	names := []string{prefix + "_SERVICE_HOST", prefix + "_SERVICE_PORT", prefix + "_PORT"}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			names = append(names, prefix+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")))
		}
		base := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(string(cmp.Or(p.Protocol, corev1.ProtocolTCP))))
		names = append(names, base, base+"_PROTO", base+"_PORT", base+"_ADDR")
	}
	return names
}

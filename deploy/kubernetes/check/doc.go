// Package check proves the Kubernetes manifests in deploy/kubernetes
// well-formed and consistent with the programs, offline: no cluster is
// needed, and none is contacted. `make k8s-check` runs its tests.
//
// Render builds a kustomization with the Kustomize Go API, as `kubectl
// apply -k` would, and decodes every object strictly through client-go's
// scheme, so that an unknown or misspelt field is an error naming it.
// Check then holds the objects against the programs themselves:
//
//   - every environment variable set on a container of spread-dispatcher,
//     spread-backend, spread-seeder or spread-lab (the lab's console) is
//     one that program reads, and the program accepts its value: the
//     program's own `check` command judges them, so the validation is the
//     code's, not a copy; a helper variable must feed a later one through
//     $(NAME), as Kubernetes expands only earlier ones; and no Service adds
//     a variable (Kubernetes' service links) that a program reads;
//   - every probe, container port and Service port of such a container is a
//     port the program listens on, and not only on loopback (the settings
//     of listenSettings, as set or by default, as its `check` prints them);
//     on other containers (Redis) they must be ports the container declares;
//     and the URL a backend with REGISTER=1 puts in the list (ADVERTISE_URL)
//     is on one of its ports;
//   - a pod's terminationGracePeriodSeconds is longer than its programs may
//     take to stop after SIGTERM (the backend's DRAIN_TIMEOUT, the
//     dispatcher's SHUTDOWN_TIMEOUT), so that Kubernetes does not kill a
//     backend still leaving the list;
//   - every selector (Service, PodDisruptionBudget, NetworkPolicy, a
//     workload's own) matches a pod template, a Service's target ports and
//     a NetworkPolicy's ports exist on the pods it selects, and a
//     HorizontalPodAutoscaler scales a workload that exists.
//
// A program is recognised by its image's name, the last part of the image
// reference without tag or digest (spread-dispatcher), so that an overlay
// pointing the images at a registry is checked the same. Each problem names
// the object and the field, as Kind/name: field.path: what is wrong.
//
// A program's check sees exactly the variables its container sets, not
// what the image sets (the lab image's ENV LAB_ADDR=0.0.0.0:8099), so the
// manifests set every listening setting themselves.
package check

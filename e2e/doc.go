// Package e2e holds the end-to-end tests: they build the real images from the
// repository's Dockerfile, start Redis, three backends, the seeder and the
// dispatcher on one Docker network with testcontainers-go, and check from
// outside, as a user would, what a client sees. TestFaults breaks a stack of
// its own under steady load (a poisoned list, a stopped backend, SIGTERM to
// a dispatcher, Redis paused and stopped) and counts the requests sent,
// failed and redirected per backend. TestBackendsComeAndGo scales backends
// that register themselves up and down under load in proxy mode, kills one,
// and ejects one that fails every request. TestCompose brings up compose.yaml itself
// and does what the README tells a newcomer to do; TestMakeUp runs `make up`
// (it needs Compose, the v2 plugin or docker-compose v1).
//
// Environment:
//
//	GO_IMAGE, RUNTIME_IMAGE  base images for the build (Dockerfile defaults if unset)
//	REDIS_IMAGE              the Redis image (default redis:7-alpine)
//
// On a machine without Ryuk (see .ci/run), also set
// TESTCONTAINERS_RYUK_DISABLED=true; every test terminates what it starts.
//
// TestDashboard drives the dashboard in a headless Chromium (or Google
// Chrome) found on PATH and saves a screenshot in its artifact directory;
// with UPDATE_SCREENSHOTS=1 it also refreshes docs/dashboard.png, the one the
// README shows. TestConsole does the same with the lab's console (its image,
// built when the test runs, against the real images as compose's profile
// "lab" runs them) and docs/console.png.
package e2e

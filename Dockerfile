# One Dockerfile builds the three programs; each has its own target:
#
#   docker build --target dispatcher -t spread-dispatcher .
#   docker build --target backend    -t spread-backend .
#   docker build --target seeder     -t spread-seeder .
#
# and the lab's console (lab serve), for compose's "lab" profile:
#
#   docker build --target lab -t spread-lab .
#
# The build stage compiles all three in one step, so the standard library and
# the shared dependencies are compiled once, and the second and third images
# come from the layer cache in seconds. The build context is the repository
# root because all three use the shared module internal/.
#
# Base images are build args, so that a mirror or an air-gapped machine can
# substitute its own (.ci/run builds local stand-ins; see the README).
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ENV CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local
WORKDIR /src
# Dependencies in their own layer, so that editing code does not download
# them again. Each module builds on its own (GOWORK=off), as in `make unit`.
COPY internal/go.mod internal/go.sum internal/
COPY backend/go.mod backend/go.sum backend/
COPY seeder/go.mod seeder/go.sum seeder/
COPY dispatcher/go.mod dispatcher/go.sum dispatcher/
RUN for m in backend seeder dispatcher; do (cd $m && go mod download) || exit 1; done
COPY internal/ internal/
COPY backend/ backend/
COPY seeder/ seeder/
COPY dispatcher/ dispatcher/
RUN for m in backend seeder dispatcher; do \
      (cd $m && go build -trimpath -ldflags="-s -w" -o /out/$m .) || exit 1; \
    done

# A static binary, CA certificates and a non-root user: nothing else. The
# dispatcher binds port 80 as this user: Docker (20.10 and later) lets
# containers bind any port unprivileged (net.ipv4.ip_unprivileged_port_start=0);
# elsewhere (host networking, some Kubernetes or Podman setups) set PORT to a
# port above 1023.
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532

# No EXPOSE: a backend listens on $PORT (default 5000), set when it runs, and
# compose runs three of them on 5000, 5001 and 5002; an EXPOSE fixed here
# would name the wrong port for two of them. Publish the port you set.
FROM runtime AS backend
COPY --from=build /out/backend /backend
ENTRYPOINT ["/backend"]

FROM runtime AS seeder
COPY --from=build /out/seeder /seeder
ENTRYPOINT ["/seeder"]

# The default PORT and ADMIN_PORT, which compose uses inside the container.
FROM runtime AS dispatcher
COPY --from=build /out/dispatcher /dispatcher
EXPOSE 80 8080
ENTRYPOINT ["/dispatcher"]

# The lab's console, `lab serve` (docs/lab.md), which compose's "lab" profile
# runs against the profile's services. Its build stage is its own and comes
# last, so that building the three programs never downloads the lab's
# dependencies (the classic builder builds every stage before the target,
# and none after it).
FROM ${GO_IMAGE} AS build-lab
ENV CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local
WORKDIR /src
COPY internal/go.mod internal/go.sum internal/
COPY lab/go.mod lab/go.sum lab/
# Download the dependencies, and compile the heavy ones into the build
# cache of this layer (the same flags as the build below), so that a
# change to the lab's code recompiles the lab alone: without it, every
# change took three minutes here, compiling gonum's plot and its fonts.
RUN cd lab && go mod download && go build -trimpath gonum.org/v1/plot/plotter gonum.org/v1/plot/vg/vgsvg \
      gonum.org/v1/plot/text github.com/tsenart/vegeta/v12/lib github.com/redis/go-redis/v9
COPY internal/ internal/
COPY lab/ lab/
RUN cd lab && go build -trimpath -ldflags="-s -w" -o /out/lab .

# In a container the console listens on every interface (clients other
# than loopback need the token it prints) and drives the stack that
# LAB_BACKENDS, LAB_DISPATCHERS and REDIS_URL name.
FROM runtime AS lab
COPY --from=build-lab /out/lab /lab
ENV LAB_ADDR=0.0.0.0:8099
EXPOSE 8099
ENTRYPOINT ["/lab"]
CMD ["serve"]

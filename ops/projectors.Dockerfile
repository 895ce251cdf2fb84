# The team projector bundle: the component files a deployment runs, delivered to the
# server's pod by image digest (ops/k8s/base/statefulset.yaml: an init container copies
# /projectors/ into the pod). Build it from a directory holding the .wasm files:
#   docker build -f ops/projectors.Dockerfile -t ghcr.io/<org>/leviathan-projectors:2026.12.1 DIR
# and deploy it by the digest the push prints. The server still checks every component
# against its SHA-256 pin in the projector manifest: the image delivers, the pin decides.
FROM busybox:1.37.0
COPY --chown=10001:10001 . /projectors/
USER 10001:10001

"""The container image, the Kubernetes manifests and the Grafana dashboard in config/."""
